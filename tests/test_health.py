"""/healthz says the process is up; /readyz that Redis answers and a worker lives."""

from rq import Queue
from rq.serializers import JSONSerializer

from app import create_app
from app.embedded import free_port
from jobs.worker import BridgeWorker


def worker_of(redis, queue_name="memory-bridge"):
    """Register an RQ worker of ``queue_name`` as the worker process would."""
    queue = Queue(queue_name, connection=redis, serializer=JSONSerializer)
    worker = BridgeWorker([queue], connection=redis, serializer=JSONSerializer)
    worker.register_birth()
    worker.heartbeat()
    return worker


def test_not_ready_without_a_worker(client):
    """Redis up but no worker: 503, saying which part is missing."""
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.get_json() == {"status": "unready", "redis": "ok", "workers": 0}
    assert client.get("/healthz").status_code == 200


def test_ready_with_a_live_worker_of_our_queue(client, redis):
    """A worker of the bridge's queue with a fresh heartbeat makes it ready."""
    other = worker_of(redis, "someone-else")
    try:
        assert client.get("/readyz").status_code == 503
        worker = worker_of(redis)
        try:
            answer = client.get("/readyz")
            assert answer.status_code == 200
            assert answer.get_json() == {"status": "ready", "redis": "ok", "workers": 1}
        finally:
            worker.register_death()
    finally:
        other.register_death()


def test_not_ready_when_redis_is_unreachable(settings, redis):
    """With Redis away, /readyz is 503; /healthz still says the process is up."""
    app = create_app({**settings, "redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    client = app.test_client()
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.get_json()["redis"] == "unreachable"
    assert client.get("/healthz").status_code == 200
