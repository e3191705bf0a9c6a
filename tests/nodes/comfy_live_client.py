"""Queue one API workflow on a running ComfyUI, interrupt it once a node reports a given step,
and print a JSON summary of every event (run with $COMFY_PYTHON, which has aiohttp).

  comfy_live_client.py --port P --workflow API.json [--interrupt-node ID --interrupt-at STEP]

Used by test_live_comfyui.py for the interrupt check: the harness's run_workflow.py can only
interrupt after a delay, and a tiny model's steps are too short to aim at with a delay.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import aiohttp


async def run(a: argparse.Namespace) -> dict:
    base, client_id = f"http://127.0.0.1:{a.port}", str(uuid.uuid4())
    with open(a.workflow) as f:
        prompt = json.load(f)
    events: list[dict] = []
    summary: dict = {"events": events, "state": "timeout", "interrupt_sent_after": None}
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"ws://127.0.0.1:{a.port}/ws?clientId={client_id}", max_msg_size=0) as ws:
            async with s.post(f"{base}/prompt", json={"prompt": prompt, "client_id": client_id}) as r:
                body = await r.json()
                if r.status != 200:
                    return {"state": "rejected", "body": body, "events": events}
                pid = body["prompt_id"]
            while time.monotonic() - t0 < a.timeout:
                msg = await ws.receive(timeout=a.timeout)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                m = json.loads(msg.data)
                typ, data = m.get("type"), m.get("data") or {}
                if data.get("prompt_id") not in (None, pid) or typ in ("status", "progress_state"):
                    continue
                events.append({"t": round(time.monotonic() - t0, 3), "type": typ,
                               "node": data.get("node") or data.get("node_id"),
                               "value": data.get("value"), "max": data.get("max"),
                               "node_type": data.get("node_type"),
                               "message": data.get("exception_message")})
                if (typ == "progress" and a.interrupt_node is not None and summary["interrupt_sent_after"] is None
                        and str(data.get("node")) == a.interrupt_node and data.get("value", 0) >= a.interrupt_at):
                    async with s.post(f"{base}/interrupt", json={"prompt_id": pid}) as r:
                        events.append({"t": round(time.monotonic() - t0, 3), "type": "interrupt_sent",
                                       "status": r.status})
                    summary["interrupt_sent_after"] = data["value"]
                if typ in ("execution_success", "execution_error", "execution_interrupted"):
                    summary["state"] = typ.removeprefix("execution_")
                    break
    return summary


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workflow", required=True)
    p.add_argument("--interrupt-node", default=None)
    p.add_argument("--interrupt-at", type=int, default=1)
    p.add_argument("--timeout", type=float, default=600)
    print(json.dumps(asyncio.run(run(p.parse_args()))))


if __name__ == "__main__":
    main()
