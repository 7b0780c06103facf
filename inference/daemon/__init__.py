"""The inference daemon: one resident pipeline, jobs claimed from Postgres, run by every rank.

Rank 0 is the only rank that talks to the database. It waits for work (LISTEN on the
ready channel, with a polling fallback), claims a job through videojobs.services,
broadcasts it on the control channel, and while every rank runs it, rank 0 writes
progress, heartbeats the lease and decides at each denoising step whether the job must
stop. That decision reaches every rank in the same collective, so all ranks stop at the
same step.

main.py       the command's entry: topology check, runtime, checkpoint, loading, shutdown
config.py     the daemon's settings, and the topology it was asked for and runs
loop.py       rank 0 waits and claims; every rank receives what comes next and runs it
listen.py     rank 0's LISTEN on the ready channel
job.py        one job on every rank, and the hooks where the ranks agree to go on or stop
outcome.py    rank 0 records how a job ended
heartbeat.py  rank 0's lease and worker heartbeats, from a thread
active.py     the job running now, as every rank knows it
stop.py       stop signals, and the supervisor that started us gone
database.py   rank 0's database calls: best effort, or retried until they land
"""
