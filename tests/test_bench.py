"""`make bench` goes on past a failing or stuck stage and says why it measured nothing."""

from __future__ import annotations

import time

from bench import run


def test_a_failing_or_stuck_stage_is_reported_and_the_next_still_runs(capsys, monkeypatch):
    def broken():
        raise RuntimeError("Locator.wait_for: Timeout 30000ms exceeded")

    monkeypatch.setattr(run, "STAGE_SECONDS", 1)
    ran = []
    results = [run.run_stage("view", broken), run.run_stage("lens", time.sleep, 5),
               run.run_stage("decode", lambda: ran.append(True))]
    out = capsys.readouterr().out
    assert results == [False, False, True] and ran == [True]
    assert "view    not measured: RuntimeError: Locator.wait_for: Timeout 30000ms" in out
    assert "lens    not measured: StageTimeout: stopped after 1 s" in out
