"""The NBA dataset: deterministic, and every answer re-derived here independently."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from nba_api.stats.static import players, teams

NBA = Path("data/nba")


def load(name: str) -> list[dict]:
    return [json.loads(l) for l in (NBA / f"{name}.jsonl").read_text().splitlines()]


def test_generator_is_deterministic_and_matches_the_committed_files(tmp_path):
    for out in (tmp_path / "a", tmp_path / "b"):
        subprocess.run([sys.executable, "scripts/make_nba_data.py", "--out", str(out)], check=True, capture_output=True)
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "test_mc.jsonl", "README.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
        assert (tmp_path / "a" / name).read_bytes() == (NBA / name).read_bytes(), f"data/nba/{name} is stale: make nba"


def test_split_sizes_and_no_test_question_in_train():
    sizes = {n: len(load(n)) for n in ("train", "val", "test", "test_mc")}
    assert sizes == {"train": 2000, "val": 200, "test": 400, "test_mc": 400}
    train_q = {r["messages"][1]["content"] for r in load("train")}
    assert not any(r["messages"][1]["content"] in train_q for r in load("test") + load("val"))
    assert {r["kind"] for r in load("train")} == {"fact", "box-score", "classification", "multi-step"}


LINE = re.compile(r"(?P<name>[^:]+?): (?P<fgm>\d+)-(?P<fga>\d+) FG, (?P<tpm>\d+)-(?P<tpa>\d+) 3PT, (?P<ftm>\d+)-(?P<fta>\d+) FT, "
                  r"(?P<oreb>\d+) OREB, (?P<dreb>\d+) DREB, (?P<ast>\d+) AST, (?P<stl>\d+) STL, (?P<blk>\d+) BLK")


def recompute(row: dict) -> str | None:
    """The answer from the question's own numbers, written without the generator's helpers."""
    q, task = row["messages"][1]["content"], row["task"]
    team_by_name = {t["full_name"]: t for t in teams.get_teams()}
    m = LINE.search(q)
    if m:
        v = {k: (int(x) if x.isdigit() else x) for k, x in m.groupdict().items()}
        name = v["name"].strip()
        for prefix in ("Stat line: ", "Given the box-score line ", "Using ", "From ", "Given "):
            name = name.removeprefix(prefix)
        pts = v["fgm"] * 2 + v["tpm"] + v["ftm"]
        reb = v["oreb"] + v["dreb"]
        if task == "points":
            return f"{name} scored {pts} points."
        if task == "fg_pct":
            return f"{name} shot {round(100 * v['fgm'] / v['fga'], 1):.1f}% from the field."
        if task == "efg_pct":
            return f"{name}'s eFG% is {100 * (v['fgm'] + v['tpm'] / 2) / v['fga']:.1f}%."
        if task == "ts_pct":
            return f"{name}'s TS% is {100 * pts / (2 * v['fga'] + 0.88 * v['fta']):.1f}%."
        if task == "rebounds":
            return f"{name} had {reb} rebound{'' if reb == 1 else 's'}."
        if task == "tier":
            t = "star" if pts > 29 else "strong" if pts > 19 else "solid" if pts > 9 else "quiet"
            return f"{pts} points makes it a {t} night."
        if task == "double":
            cats = [pts, reb, v["ast"], v["stl"], v["blk"]]
            tens = len([c for c in cats if c > 9])
            kind = {0: "neither a double-double nor a triple-double", 1: "neither a double-double nor a triple-double",
                    2: "a double-double"}.get(tens, "a triple-double")
            return f"{name} recorded {kind} ({pts} PTS, {reb} REB, {v['ast']} AST, {v['stl']} STL, {v['blk']} BLK)."
    if task == "winner":
        a, qa, b, qb = re.search(r"(?:scores: |the )(.+?) (?:scored )?([\d-]+)(?:,| and) (?:the )?(.+?) (?:scored )?([\d-]+)[.?]", q).groups()
        sa, sb = sum(map(int, qa.split("-"))), sum(map(int, qb.split("-")))
        w, hi, lo = (a, sa, sb) if sa > sb else (b, sb, sa)
        return f"The {w} won {hi}-{lo}, by {hi - lo} point{'' if hi - lo == 1 else 's'}."
    if task == "older_team":
        a, b = re.search(r"the (.+?) or the (.+?),|the (.+?) and the (.+?),", q).groups()[:2] if " or the " in q else \
            re.search(r"the (.+?) and the (.+?),", q).groups()
        ya, yb = team_by_name[a]["year_founded"], team_by_name[b]["year_founded"]
        return f"The {a if ya < yb else b} are older, by {abs(ya - yb)} years."
    if task in ("team_city", "team_founded", "team_abbr"):
        t = next(team_by_name[n] for n in team_by_name if n in q)
        return {"team_city": f"The {t['full_name']} are based in {t['city']}, {t['state']}.",
                "team_founded": f"The {t['full_name']} were founded in {t['year_founded']}.",
                "team_abbr": f"The abbreviation of the {t['full_name']} is {t['abbreviation']}."}[task]
    if task == "active":
        name = re.search(r"(?:Is|Does) (.+?) (?:an active|still|currently)", q).group(1)
        active = {p["full_name"]: p["is_active"] for p in players.get_players()}[name]
        return f"Yes, {name} is an active player." if active else f"No, {name} is not an active player."
    return None


def test_every_answer_is_rederived_independently():
    checked = 0
    for split in ("train", "val", "test"):
        for row in load(split):
            expected = recompute(row)
            assert expected is not None, row["task"]
            assert row["messages"][2]["content"] == expected == row["answer"], (split, row["messages"][1]["content"])
            checked += 1
    assert checked == 2600


def test_multiple_choice_has_the_answer_once_and_distinct_choices():
    for mc, row in zip(load("test_mc"), load("test")):
        assert mc["choices"][mc["label"]] == row["answer"]
        assert len(set(mc["choices"])) == len(mc["choices"]) >= 2
