"""The plain alternative the forwarding figures are compared with.

One RQ job per callback, each posting its one event to the Memory API: what one
would write without the bridge's buffers. Run by a stock ``rq worker``, which
reads the API's address and credentials from the environment, as the bridge's
worker does: MEMORY_BASE_URL, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN.
"""

import os
from urllib.parse import quote

import requests

EVENT_TYPE = "twilio-comms-lifecycle"


def post_event(store: str, profile: str, event_json: str) -> int:
    """RQ job: POST one event to a profile's Events; fail unless it is accepted."""
    base = os.environ["MEMORY_BASE_URL"].rstrip("/")
    auth = (os.environ["TWILIO_ACCOUNT_SID"], os.environ["TWILIO_AUTH_TOKEN"])
    url = f"{base}/v1/Stores/{quote(store)}/Profiles/{quote(profile)}/Events"
    body = f'{{"type":"{EVENT_TYPE}","events":[{event_json}]}}'
    answer = requests.post(
        url,
        data=body.encode(),
        auth=auth,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    if answer.status_code != 202:
        raise RuntimeError(f"the API answered {answer.status_code}: {answer.text}")

    return answer.status_code
