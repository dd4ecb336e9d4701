"""The rq worker class of distributed workers: `rq worker jobs --worker-class workers.worker.PreloadedWorker`.

RQ forks a work horse per job from the worker process. Importing the tasks here, in the worker
process, means each horse starts with the whole application already imported; with the plain
`Worker`, every horse imported it again (about a CPU-second per job, most of a small job's cost).
"""

from __future__ import annotations

from rq.worker import Worker

import workers.tasks  # noqa: F401  (imported for the horses to inherit)


class PreloadedWorker(Worker):
    """RQ's forking worker, with the application imported before the first fork."""
