"""Embed Beethoven in a trio program: three nodes in one process on loopback.

Run it with ``python examples/embed.py``. Each node declares the same role, a
custom allocator signal, and listens for node updates; node 3 is stopped halfway
and the role moves. In a real deployment each process runs one node.
"""

from __future__ import annotations

import trio

from beethoven import Config, Role, RoleContext, open_node


async def billing(ctx: RoleContext) -> None:
    """A count-1 role: exactly one node in the cluster runs it."""
    print(f"  {ctx.node} now runs {ctx.role} (fencing epoch {ctx.epoch})")
    while not ctx.stopping.is_set():
        ctx.report_health("ok")
        with trio.move_on_after(1):
            await ctx.stopping.wait()


async def node(name: str, host: str, port: int, *, task_status: trio.TaskStatus[None]) -> None:
    """Run one node until cancelled, printing what it sees."""
    config = Config(
        name=name,
        bind=host,  # each node on its own loopback address, all on one port
        port=port,
        cluster_net=("127.0.0.0/29",),  # where the Locator looks for the others
        roles=(Role("billing", count=1, run=billing),),
        preset="local",
    )
    async with open_node(config) as me:
        jobs = me.signal("jobs", weight=2.0, type="count")  # our own load signal
        await me.wait_ready()
        task_status.started()
        async with me.alert_me() as updates:
            async for update in updates:
                jobs.increment()  # pretend every update costs us some work
                print(f"  {name} sees {update.node} {update.status}; allocate() -> {me.allocate()}")


async def main() -> None:
    """Start three nodes, stop one halfway, then stop all."""
    port = 33990
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            scopes = []
            for i in range(3):
                scope = trio.CancelScope()
                scopes.append(scope)

                async def run(
                    i: int = i,
                    scope: trio.CancelScope = scope,
                    *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                ) -> None:
                    with scope:
                        await node(
                            f"node{i + 1}", f"127.0.0.{i + 2}", port, task_status=task_status
                        )

                await nursery.start(run)
            await trio.sleep(3)
            print("stopping node3 (a graceful leave)")
            scopes[2].cancel()
            await trio.sleep(3)
            nursery.cancel_scope.cancel()
    print("done")


if __name__ == "__main__":
    trio.run(main)
