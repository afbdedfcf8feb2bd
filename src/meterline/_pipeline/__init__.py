"""The pipeline behind a client: the memory queue, the spooler and sender threads, settlement.

``_queue``: where ``report()`` puts an event and where a full queue turns one away.
``_batches``: entries to exact bytes and batches (duplicates settled).
``_spooler``: the thread that cuts and journals, never waiting on the network.
``_sender``: the thread that sends, retries (through ``_delivery``) and replays.
``_settle``: every event's one outcome, and the waiters of ``flush()``/``close()``.
``_close``: close() within its bound, and the exit's close of every open pipeline.
``_pipeline``: the whole, with flush, fork and the registry of open pipelines.
"""

from meterline._pipeline._close import close_all
from meterline._pipeline._pipeline import Pipeline, open_pipelines

__all__ = ["Pipeline", "close_all", "open_pipelines"]
