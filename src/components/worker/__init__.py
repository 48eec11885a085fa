"""The worker pool: processes that consume the queue's jobs at their own pace.

In the scaling story workers are the other half of the message queue: the web tier
publishes photo-processing jobs and answers the user at once; workers reserve a job,
do the slow part (here: make a thumbnail-sized derivative and its digest), store the
result through the web tier's storage (``--web URL``: an idempotent PUT, so a job
delivered twice stores one result; ``--result-dir`` writes files instead) and only then
delete the job. Producers and consumers scale independently: add workers
when the queue grows. Failures are retried through ``release`` with exponential backoff
and buried after ``--max-failures`` attempts, so a poison job cannot loop forever; a
worker that dies mid-job loses nothing, because the queue takes the job back when the
connection drops (or when its TTR expires). On a 2-core machine ``--service-time-ms``
and ``--concurrency`` model a worker's capacity honestly instead of burning CPU.
"""
