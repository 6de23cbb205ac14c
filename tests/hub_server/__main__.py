"""Run LocalHub as its own process, for end-to-end tests with workers elsewhere.

    python -m tests.hub_server --port 8765 --seed-dir DIR

DIR/seed.json describes users, tokens and repos (see LocalHub.seed); repo folders are
relative to DIR. The first line on stdout is the URL; Ctrl-C or SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import signal
import threading

from .server import LocalHub


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.hub_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--seed-dir", help="folder with seed.json and the repo folders it names")
    parser.add_argument("--storage-dir", help="where blobs are kept (default: a temporary folder)")
    parser.add_argument("--lfs-threshold", type=int, default=10_000_000,
                        help="files at least this big always go through LFS")
    args = parser.parse_args(argv)

    hub = LocalHub(host=args.host, port=args.port, storage_dir=args.storage_dir, lfs_threshold=args.lfs_threshold)
    if args.seed_dir:
        hub.seed_from_dir(args.seed_dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with hub:
        print(hub.url, flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
