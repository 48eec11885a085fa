"""The message queue: a durable, beanstalkd-compatible work queue.

In the scaling story the queue decouples the web tier from slow work: a web server
``put``s a photo-processing job and answers the user at once, workers ``reserve`` jobs
at their own pace, and the two sides scale independently (more workers when the queue
grows). The queue speaks beanstalkd's protocol, so greenstalk and beanstalkd's tools
work unchanged. Its trade-offs are beanstalkd's: one process, jobs held in memory, an
append-only binlog for durability. With ``-f 0`` every acknowledged job is on disk, and
group commit makes that cheap by sharing one fsync among all concurrent producers.
Unlike Kafka or SQS there is no replication: the binlog survives a crash of the process,
not the loss of the machine.
"""
