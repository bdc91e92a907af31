"""One in-process comparison in a process of its own (Django's settings are
global to a process): the peer and session-ledger, alternating rounds.

    python -m bench.peers.worker django-db-postgres --calls 2000 --rounds 5

Prints one JSON document on stdout: the comparisons and the peer's version.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

from bench.peers.harness import Comparison, Contender, alternate
from bench.peers.ours import Ours
from bench.peers.pairs import BY_KEY, IN_PROCESS_TARGET, Pair
from bench.peers.workload import Backends, backends, new_runner


@contextmanager
def peer_contender(
    pair: Pair, where: Backends, runner: asyncio.Runner
) -> Iterator[tuple[Contender, str]]:
    """The peer, started on its own database; (contender, version)."""
    if pair.module == "django":
        from bench.peers import django_peer

        yield (
            django_peer.start(where, pair.backend, pair.variant).contender(),
            django_peer.version(),
        )
    elif pair.module == "fastapi-users":
        from bench.peers import fastapi_users_peer

        peer = runner.run(fastapi_users_peer.FastapiUsers.start(where, pair.variant))
        try:
            yield peer.contender(), fastapi_users_peer.version()
        finally:
            runner.run(peer.close())
    elif pair.module == "eventsourcing":
        from bench.peers import eventsourcing_peer

        es = eventsourcing_peer.Eventsourcing(where, pair.backend)
        try:
            yield es.contender(), eventsourcing_peer.version()
        finally:
            es.close()
    else:
        raise ValueError(f"unknown peer module {pair.module}")


def compare(pair: Pair, calls: int, rounds: int, log: Callable[[str], None]) -> dict[str, object]:
    with ExitStack() as stack:
        runner = stack.enter_context(new_runner())
        ours_where = stack.enter_context(backends(pair.backend))
        their_where = stack.enter_context(backends(pair.backend))
        ours = runner.run(Ours.start(ours_where, with_redis=pair.redis))
        stack.callback(lambda: runner.run(ours.close()))
        theirs, version = stack.enter_context(peer_contender(pair, their_where, runner))
        ours_side = ours.contender()
        # Warm both up (connections, statement caches, imports) off the clock.
        warm = min(20, calls)
        for step in pair.steps:
            alternate(runner, ours_side, theirs, step.ours, step.theirs, calls=warm, rounds=1)
        results: list[dict[str, object]] = []
        for step in pair.steps:
            mine, their, ratios = alternate(
                runner, ours_side, theirs, step.ours, step.theirs, calls=calls, rounds=rounds
            )
            mine.label, their.label = step.ours, step.theirs
            comparison = Comparison(
                kind="in-process",
                config=pair.config,
                peer=pair.peer,
                op=step.name,
                ours=mine,
                theirs=their,
                ratios=ratios,
                target=IN_PROCESS_TARGET,
            )
            log(
                f"{pair.peer} ({pair.config}) {step.name}: ours {mine.median_rate:,.0f}/s, "
                f"theirs {their.median_rate:,.0f}/s, ratio {comparison.ratio:.2f}"
            )
            results.append(comparison.to_json())
        return {"pair": pair.key, "version": version, "comparisons": results}


def main() -> None:
    import sys

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pair", choices=sorted(BY_KEY))
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    print(json.dumps(compare(BY_KEY[args.pair], args.calls, args.rounds, log)))


if __name__ == "__main__":
    main()
