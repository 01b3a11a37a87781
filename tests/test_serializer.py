"""The bridge's RQ jobs are JSON in Redis, never pickle (README "Security")."""

import json
import pickle
import zlib

from app import config
from jobs.worker import Pump, _worker


def test_a_queued_drain_job_is_stored_as_json_not_pickle(settings, redis):
    """The Pump's drain job is written with RQ's JSON serializer."""
    loaded = config.load(settings, environ={})
    queue = _worker(loaded, redis).queues[0]
    redis.zadd("mb:due", {"store/phone:+15005550006": 0})

    Pump(loaded, redis, queue).tick()

    [job_id] = queue.job_ids
    data = zlib.decompress(redis.hget(f"rq:job:{job_id}", "data"))
    assert not data.startswith(pickle.PROTO)  # b"\x80" opens every pickle
    function, _instance, args, kwargs = json.loads(data)
    assert (function, args, kwargs) == ("jobs.drain.drain", [], {})
