# Hugging Face Docker Space: Redis, one worker and the app in one container, as `make run`
# starts them (app.py starts a private redis-server and a worker when REDIS_URL is unset).
# The same image runs the app and the workers of docker-compose.yml (self-hosting).
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/*

# Spaces run the container as UID 1000.
RUN useradd -m -u 1000 user
USER user
# SYSTEM=spaces turns on "Sign in with Hugging Face" (Gradio's real OAuth); docker-compose.yml
# overrides it for self-hosting (a token field instead).
# COREML_CONVERTER_MAX_PARAMS: the free CPU Space has 16 GB; a big model converts a chunk of
# layers at a time and peaks at about 3 GB + 2.5 bytes per parameter (worker/capabilities.py),
# so 3 B parameters fit with room, and convert within the job timeout on 2 vCPUs. Raise it
# (Space variable) on bigger hardware.
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SYSTEM=spaces \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    COREML_CONVERTER_STATE_DIR=/home/user/state \
    COREML_CONVERTER_MAX_PARAMS=3000000000
WORKDIR $HOME/app
RUN mkdir -p /home/user/state

# torch first, pinned and CPU-only: the default wheel would pull gigabytes of CUDA.
RUN pip install --no-cache-dir --user torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY --chown=user requirements.txt .
RUN pip install --no-cache-dir --user -r requirements.txt
COPY --chown=user . .

EXPOSE 7860
CMD ["python", "app.py"]
