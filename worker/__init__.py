"""The job service: Hub ID in, validated Core ML package pushed to the Hub out.

Modules, one concern each:
- spec: JobSpec, the request, checked before anything is queued (JSON, no token)
- tokens: the user's token, encrypted with the server key, in its own Redis key
- queues: Redis connection and the rq queues (JSON serializer, never pickle)
- api: what the app calls: submit, status, cancel, recent_jobs, workers
- status: JobStatus, what api.status returns (typed fields; JSON through to_dict / from_dict)
- states: JobState and ErrorKind, the words a status is made of
- job: the job function (resolve -> download -> convert -> validate -> package -> push -> cleanup)
- resolve / conversion / card / hub: the stages' own work (checks, engine call, model card, push)
- progress: stage, percent, message and log tail in the job's meta
- lifecycle: callbacks when a job ends unseen (stopped, crashed worker): token, temp folder, error
- workdirs: one temp folder per job under state/jobs/
- capabilities: what a worker announces (OS, Core ML runtime, memory, model size limit)
- runner: the worker process (`python -m worker`)
- embedded: the default backend: a private redis-server and one worker
"""
