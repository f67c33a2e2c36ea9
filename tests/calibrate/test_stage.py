"""The calibrate stage without sockets: forecasts, once-only publication, evidence, resolution,
and a bad SCORES message dead-lettered while the stage keeps serving."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
import numpy as np
import polars as pl
import pytest
from stage_fixtures import K, hand_store, live_calibration, scores_message, stage_with

from services.calibrate.forecast import ScoresError
from services.calibrate.ledger import Ledger
from services.calibrate.service import ACCEPTS, CalibrateStage
from services.calibrate.watch import CloneSubscriber, render
from shared.abstention import abstain, pass_on
from shared.config import load_config
from shared.protocol import Limits, MessageType, decode, encode, new_message
from shared.runtime import StageRuntime

REPO_ROOT = Path(__file__).resolve().parents[2]


class Crash(BaseException):
    """Stands for a SIGKILL right after the publish left the process."""


def forecasts(sent: list) -> list:
    return [decode(parts[1:]) for parts in sent if parts[0].startswith(b"forecast/")]


def test_a_scores_message_becomes_one_calibrated_forecast_with_lineage(tmp_path: Path) -> None:
    sent: list = []
    routes = stage_with(tmp_path, sent).handle("scores", scores_message(7, 3, 12))
    assert [(name, m.type) for name, m in routes] == [("done", MessageType.DONE)]
    assert routes[0][1].id == "SYNTH/t12/s7/r3"
    (forecast,) = forecasts(sent)
    m = forecast.meta
    assert sent[0][0] == b"forecast/7/3/" and m["seq"] == 1
    probabilities = [c["p"] for c in m["candidates"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) + m["other"] == pytest.approx(1.0, abs=1e-6) and 0 < m["other"] < 1
    # frame: candidate order, then other; the best llm logit (candidate 100) is the top pick
    assert forecast.frames[0].shape == (K + 1,) and m["candidates"][0]["id"] == 100
    assert m["candidates"][0]["name"] == "Entity 100" and m["query"]["subject_name"] == "Subject 7"
    assert m["lineage"] == {
        "graph_artifact": "g" * 64,
        "llm_artifact": "l" * 64,
        "calibrator_artifact": "c" * 64,
        "data_cutoff": 11,
    }


def test_a_duplicate_id_is_published_once_and_done_again(tmp_path: Path) -> None:
    sent: list = []
    stage = stage_with(tmp_path, sent)
    first = stage.handle("scores", scores_message(7, 3, 12))
    again = stage.handle("scores", scores_message(7, 3, 12))
    assert len(forecasts(sent)) == 1 and stage.duplicates == 1
    assert first[0][1].id == again[0][1].id  # ingest hears done both times
    # also across a restart: a new stage on the same ledger file
    restarted = stage_with(tmp_path, sent)
    restarted.handle("scores", scores_message(7, 3, 12))
    assert len(forecasts(sent)) == 1


def test_a_kill_between_publish_and_record_neither_loses_nor_repeats(tmp_path: Path) -> None:
    published: list = []

    def crash_after_send(parts: list) -> None:
        published.append(parts)
        if parts[0].startswith(b"forecast/"):
            raise Crash

    stage = CalibrateStage(
        live_calibration(), "c" * 64, Ledger(tmp_path / "f.sqlite"), crash_after_send, Limits()
    )
    with pytest.raises(Crash):
        stage.handle("scores", scores_message(1, 0, 5))
    # restart: the row was recorded but never marked sent, so it goes out again, same seq
    after: list = []
    restarted = CalibrateStage(
        live_calibration(), "c" * 64, Ledger(tmp_path / "f.sqlite"), after.append, Limits()
    )
    assert restarted.republish_unsent() == 1
    assert after[0] == published[0]  # byte for byte: the same sequence number
    restarted.handle("scores", scores_message(1, 0, 5))  # ingest re-sends it: no new number
    restarted.handle("scores", scores_message(2, 0, 5))
    assert [f.meta["seq"] for f in forecasts(after)] == [1, 2]
    assert restarted.republish_unsent() == 0
    # a Clone subscriber that saw the first copy drops the second
    subscriber = CloneSubscriber.__new__(CloneSubscriber)
    subscriber.applied, subscriber.scorecards = set(), set()
    shown = subscriber._fresh(forecasts(published)) + subscriber._fresh(forecasts(after))
    assert [m.meta["seq"] for m in shown] == [1, 2]


def test_a_bad_scores_message_is_dead_lettered_and_the_stage_keeps_serving(
    tmp_path: Path,
) -> None:
    sent: list = []
    stage = stage_with(tmp_path, sent)
    config = load_config(REPO_ROOT / "configs" / "default.yaml").model_copy(
        update={"paths": load_config(REPO_ROOT / "configs" / "default.yaml").paths.model_copy(
            update={"run_dir": tmp_path / "run"})}
    )  # fmt: skip
    runtime = StageRuntime("calibrate", config, stage.handle, accepts=ACCEPTS)
    good = scores_message(1, 0, 3)
    nan = scores_message(2, 0, 3, llm=np.full(K, np.nan))
    short = new_message(
        MessageType.SCORES, "SYNTH/t3/s3/r0", [np.zeros(K, np.float32)], meta=good.meta
    )
    wrong_ids = new_message(
        MessageType.SCORES,
        "SYNTH/t3/s4/r0",
        list(good.frames),
        meta={**good.meta, "candidates": [1]},
    )
    wrong_k = scores_message(5, 0, 3, candidates=[1, 2, 3])
    for message in (nan, short, wrong_ids, wrong_k, good):
        parts = encode(message)
        if message is nan:  # encode refuses nothing; the receiver checks finiteness
            assert not np.isfinite(message.frames[0]).any()
        runtime.receive("scores", [bytes(memoryview(p)) for p in parts])
    assert [f.id for f in forecasts(sent)] == [good.id]
    dead = (tmp_path / "run" / "deadletter" / "calibrate.jsonl").read_text().splitlines()
    assert len(dead) == 4
    assert "fitted at K=10" in dead[-1]


def test_forecasts_carry_dated_evidence_and_resolve_against_the_step(tmp_path: Path) -> None:
    store = hand_store(tmp_path)
    a, b, c, d = (int(i) for i in store.entities.ids(["A", "B", "C", "D"]))
    meet = int(store.relations.ids(["meet"])[0])
    sent: list = []
    stage = stage_with(tmp_path, sent, store, k=3)
    # candidates B, C, X(99): the llm likes B best; the truth at step 3 is {C, D}
    stage.handle("scores", scores_message(a, meet, 3, [b, c, 99], llm=np.array([3.0, 1.0, 0.0])))
    # a question that did not come up at step 3 (B met nobody then): void
    stage.handle("scores", scores_message(b, meet, 3, [a, c, d], llm=np.array([1.0, 0.0, 0.0])))
    first = forecasts(sent)[0].meta
    evidence = {e["candidate"]: e["facts"] for e in first["evidence"]}
    assert [f["date"] for f in evidence[b]] == ["2026-01-03", "2026-01-01"]  # newest first, t<3
    assert (
        evidence[b][0]["url"] == "https://news.example.com/3"
        and "A — meet — B" in evidence[b][0]["fact"]
    )
    assert [f["t"] for f in evidence[c]] == [1] and evidence[c][0]["url"] is None

    (card,) = stage.resolve_final_steps()  # step 4 has data, so step 3 is final
    assert card["step"] == 3 and card["void"] == 1 and card["hit"] == [False]
    assert card["in_candidates"] == [True]
    p = np.array(card["probabilities"][0])
    truth = card["truth"][0]
    assert truth == next(i for i, x in enumerate(first["candidates"]) if x["id"] == c)
    onehot = np.eye(len(p))[truth]
    scorecard = decode(sent[-1][1:])
    assert sent[-1][0] == b"scorecard/" and scorecard.type is MessageType.SCORECARD
    rolled = scorecard.meta["rolling"]
    assert rolled["n"] == 1 and rolled["acc@1"] == 0.0 and rolled["recall@K"] == 1.0
    assert rolled["brier"] == pytest.approx(float(((p - onehot) ** 2).sum()))
    assert rolled["nll"] == pytest.approx(-np.log(p[truth]))
    assert json.loads((tmp_path / "scorecard.json").read_text())["rolling"] == rolled
    assert stage.resolve_final_steps() == []  # resolved once
    assert msgpack.unpackb(stage.ledger.scorecards(5)[0][2])["step"] == 3


def test_the_recurrency_yardstick_is_forecast_and_scored_on_the_same_question(
    tmp_path: Path,
) -> None:
    store = hand_store(tmp_path)
    a, b, c = (int(i) for i in store.entities.ids(["A", "B", "C"]))
    meet = int(store.relations.ids(["meet"])[0])
    sent: list = []
    stage = stage_with(tmp_path, sent, store, k=3, yardsticks=("recurrency",))
    # the LLM likes B, the recurrency baseline likes C; the truth at step 3 is {C, D}
    stage.handle(
        "scores",
        scores_message(a, meet, 3, [b, c, 99], llm=np.array([3.0, 0.0, -1.0]),
                       recurrency=np.array([0.0, 3.0, -1.0])),
    )  # fmt: skip
    meta = forecasts(sent)[0].meta
    theirs = meta["yardsticks"]["recurrency"]
    assert len(theirs) == 4 and sum(theirs) == pytest.approx(1.0, abs=1e-5)
    by_id = dict(zip([x["id"] for x in meta["candidates"]], theirs, strict=False))
    assert by_id[c] > by_id[b] and meta["candidates"][0]["id"] == b

    (card,) = stage.resolve_final_steps()
    assert card["hit"] == [False]
    baseline = card["yardsticks"]["recurrency"]
    assert baseline["hit"] == [True] and baseline["in_candidates"] == [True]
    assert baseline["probabilities"][0][0] == pytest.approx(max(theirs[:3]))  # sorted, C first
    assert baseline["truth"] == [0]

    # without recurrency scores the forecast has no yardstick, and the card none either
    stage.handle("scores", scores_message(a, meet, 4, [b, c, 99], llm=np.array([3.0, 0.0, -1.0])))
    assert forecasts(sent)[-1].meta["yardsticks"] == {}


def test_a_forecast_is_compared_with_the_simulated_worlds_exact_distribution(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime

    from services.calibrate.resolution import (
        against_truth,
        forecast_probabilities,
        rolling,
        step_card,
    )
    from shared.sim_truth import TRUTH_SCHEMA, distribution, truth_file

    meta = {
        "query": {"subject": 1, "relation": 0},
        "candidates": [{"id": 5, "p": 0.5}, {"id": 6, "p": 0.3}],
        "other": 0.2,
    }
    # the world: 0.6 for 5, 0.2 for 6, 0.2 for objects that were not candidates
    [mae], [kl] = against_truth(forecast_probabilities(meta)[None], np.array([[0.6, 0.2]]))
    assert mae == pytest.approx((0.1 + 0.1 + 0.0) / 3)
    assert kl == pytest.approx(0.6 * np.log(0.6 / 0.5) + 0.2 * np.log(0.2 / 0.3))
    card = step_card(7, [meta], np.array([[1, 0, 6]]), lambda m: {5: 0.6, 6: 0.2})
    assert rolling([card])["truth_mae"] == pytest.approx(mae)
    assert rolling([card])["truth_kl"] == pytest.approx(kl)

    # the simulator's file for store step t (15-minute steps from the epoch)
    t = int(datetime(2024, 1, 1, 0, 15, tzinfo=UTC).timestamp()) // 900
    path = truth_file(tmp_path, datetime(2024, 1, 1, 0, 15, tzinfo=UTC))
    path.parent.mkdir(parents=True)
    pl.DataFrame(
        {"t": [1, 1], "subject": ["USA", "USA"], "relation": ["04", "04"],
         "object": ["CHN", "RUS"], "prob": [0.7, 0.3]},
        schema=TRUTH_SCHEMA,
    ).write_parquet(path)  # fmt: skip
    assert distribution(tmp_path, t, 15, "USA", "04") == {"CHN": 0.7, "RUS": 0.3}
    assert distribution(tmp_path, t, 15, "USA", "05") == {}
    assert distribution(tmp_path, t + 1, 15, "USA", "04") is None  # no file for that slot
    assert distribution(tmp_path, t, 1440, "USA", "04") is None  # steps are not slots


def test_a_forecast_late_for_a_scored_step_is_resolved_without_a_second_card(
    tmp_path: Path,
) -> None:
    """A backlog answer for a step whose card was published: it must not be scored again on
    every tick (it was, at a third of a core on an idle stage)."""
    store = hand_store(tmp_path)
    a, b, c, d = (int(i) for i in store.entities.ids(["A", "B", "C", "D"]))
    meet = int(store.relations.ids(["meet"])[0])
    sent: list = []
    stage = stage_with(tmp_path, sent, store, k=3)
    stage.handle("scores", scores_message(a, meet, 3, [b, c, d], llm=np.array([3.0, 1.0, 0.0])))
    (card,) = stage.resolve_final_steps()
    stage.handle("scores", scores_message(b, meet, 3, [a, c, d], llm=np.array([1.0, 0.0, 0.0])))
    assert stage.ledger.unresolved_steps() == [3]
    assert stage.resolve_final_steps() == []  # no second card for step 3
    assert stage.ledger.unresolved_steps() == []  # and nothing left to score on later ticks
    assert [row[1] for row in stage.ledger.scorecards(5)] == [3]


def test_a_subject_unknown_to_the_model_gets_a_forecast_that_says_so(tmp_path: Path) -> None:
    store = hand_store(tmp_path)
    a, d = (int(i) for i in store.entities.ids(["A", "D"]))
    meet = int(store.relations.ids(["meet"])[0])
    sent: list = []
    stage = stage_with(tmp_path, sent, store, k=3)
    query = new_message(MessageType.QUERY, "SYNTH/t3/sD/r0", [], trace_id="trace-d")
    fields = {"dataset": "SYNTH", "step": 3, "subject": d, "relation": meet}
    unknown = abstain(query, fields, ["subject"], graph_artifact="g" * 64)
    calendar = {"origin_utc": "2026-01-01T00:00:00+00:00", "step_seconds": 86400}
    passed = pass_on(unknown, llm_artifact="l" * 64, calendar=calendar)
    assert set(ACCEPTS["scores"]) >= {MessageType.SCORES, MessageType.ABSTAIN}

    routes = stage.handle("scores", passed)
    assert [(name, m.type, m.id) for name, m in routes] == [
        ("done", MessageType.DONE, "SYNTH/t3/sD/r0")
    ]
    (forecast,) = forecasts(sent)
    m = forecast.meta
    assert sent[0][0] == f"forecast/{d}/{meet}/".encode() and forecast.frames == ()
    assert (m["unknown"], m["candidates"], m["other"]) == (["subject"], [], None)
    assert (m["query"]["subject_name"], m["query"]["relation_name"]) == ("D", "meet")
    assert m["date"] == "2026-01-04"
    assert m["lineage"]["llm_artifact"] == "l" * 64 and m["lineage"]["graph_artifact"] == "g" * 64
    line = render(forecast)
    assert "D — meet — ?" in line and "subject unknown to the model" in line

    assert stage.handle("scores", passed)[0][1].type is MessageType.DONE  # re-sent: done again
    assert len(forecasts(sent)) == 1  # ... and not published twice

    # beside a scored forecast of the same step, it is counted apart, not scored
    b, c = (int(i) for i in store.entities.ids(["B", "C"]))
    stage.handle("scores", scores_message(a, meet, 3, [b, c, 99], llm=np.array([3.0, 1.0, 0.0])))
    (card,) = stage.resolve_final_steps()
    assert (card["unknown"], card["forecasts"], card["void"], len(card["truth"])) == (1, 2, 0, 1)
    scorecard = [decode(p[1:]) for p in sent if p[0] == b"scorecard/"][-1]
    rolled = scorecard.meta["rolling"]
    assert (rolled["n"], rolled["unknown"], rolled["oov_rate"]) == (1, 1, 0.5)
    assert "1 unknown to the model" in render(scorecard)


def test_each_scores_message_is_calibrated_by_the_calibrator_of_its_llm_artifact(
    tmp_path: Path,
) -> None:
    """Across a retrain's switch (shared/generations.py): forecasts of the old llm artifact keep
    the old calibrator, the new one's take the new; scores no calibrator was fitted on are
    refused by name (the runtime dead-letters them)."""
    new_llm = "m" * 64
    looked: list[str] = []

    def find(llm: str):
        looked.append(llm)
        return (live_calibration(), "d" * 64) if llm == new_llm else None

    sent: list = []
    stage = CalibrateStage(
        live_calibration(), "c" * 64, Ledger(tmp_path / "f.sqlite"), sent.append, Limits(),
        find=find,
    )  # fmt: skip
    old = scores_message(7, 3, 12)
    new = scores_message(8, 3, 12)
    new = new_message(
        MessageType.SCORES, new.id, new.frames, meta={**new.meta, "llm_artifact": new_llm}
    )
    stage.handle("scores", old)
    stage.handle("scores", new)
    lineage = [f.meta["lineage"] for f in forecasts(sent)]
    assert [(x["llm_artifact"], x["calibrator_artifact"]) for x in lineage] == [
        ("l" * 64, "c" * 64),
        (new_llm, "d" * 64),
    ]
    other = scores_message(9, 3, 12)
    other = new_message(
        MessageType.SCORES, other.id, other.frames, meta={**other.meta, "llm_artifact": "x"}
    )
    with pytest.raises(ScoresError, match="llm artifact 'x': no calibrator of a finished"):
        stage.handle("scores", other)
    assert looked == [new_llm, "x"] and len(forecasts(sent)) == 2
