"""Telling the center how much work a pool has not seen finish, for adaptive clusters.

An adaptive cluster (:meth:`distributed3.deploy.cluster.Cluster.adapt`) grows while
tasks wait, even while no worker exists to queue them on; only the pools know of those.
Each pool says its count to the center every half second while it changes, on the
connection it subscribes on: one small one-way message, nothing on a task's path.
"""
import asyncio

EVERY = 0.5  # seconds between looks at the count
AGAIN = 10  # a count that has not changed is said again this often (a restarted center)


async def report_backlog(session, every=EVERY):
    """Send ``backlog`` to the center whenever the count changed since the last look,
    and every ``AGAIN`` seconds while it is not zero."""
    said, looks = 0, 0
    while True:
        await asyncio.sleep(every)
        now, looks = session.unfinished(), looks + 1
        if now != said or (now and looks * every >= AGAIN):
            msg = {"op": "backlog", "client": session.id, "tasks": now, "reply": False}
            if await session.tell_center(msg):
                said, looks = now, 0
