"""The NBA analytics instruction dataset: real teams and players, generated box scores.

Everything is seeded, so the same seed gives the same files byte for byte, and every answer
is computed from the numbers in its own prompt, so it can be checked exactly. Train and val
use one set of question templates, test another: test questions never appear in train.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

SYSTEM = "You are an NBA analytics assistant. Answer exactly, in one short sentence."


@dataclass
class StatLine:
    name: str
    fgm: int
    fga: int
    tpm: int
    tpa: int
    ftm: int
    fta: int
    oreb: int
    dreb: int
    ast: int
    stl: int
    blk: int
    tov: int

    @property
    def pts(self) -> int:
        return 2 * self.fgm + self.tpm + self.ftm  # a three is a field goal worth one more

    @property
    def reb(self) -> int:
        return self.oreb + self.dreb

    def text(self) -> str:
        return (f"{self.name}: {self.fgm}-{self.fga} FG, {self.tpm}-{self.tpa} 3PT, {self.ftm}-{self.fta} FT, "
                f"{self.oreb} OREB, {self.dreb} DREB, {self.ast} AST, {self.stl} STL, {self.blk} BLK, {self.tov} TOV")


def pct(num: float, den: float) -> str:
    return f"{100 * num / den:.1f}%"


def fg_pct(s: StatLine) -> str:
    return pct(s.fgm, s.fga)


def efg_pct(s: StatLine) -> str:
    return pct(s.fgm + 0.5 * s.tpm, s.fga)


def ts_pct(s: StatLine) -> str:
    return pct(s.pts, 2 * (s.fga + 0.44 * s.fta))


def doubles(s: StatLine) -> int:
    return sum(v >= 10 for v in (s.pts, s.reb, s.ast, s.stl, s.blk))


def double_kind(s: StatLine) -> str:
    n = doubles(s)
    return "a triple-double" if n >= 3 else "a double-double" if n == 2 else "neither a double-double nor a triple-double"


def tier(s: StatLine) -> str:
    return "star" if s.pts >= 30 else "strong" if s.pts >= 20 else "solid" if s.pts >= 10 else "quiet"


def random_line(rng: random.Random, name: str) -> StatLine:
    fga = rng.randint(4, 26)
    fgm = rng.randint(max(1, fga // 4), max(1, (fga * 3) // 4))
    tpa = rng.randint(0, min(12, fga))
    tpm = rng.randint(0, min(tpa, fgm))
    fta = rng.randint(0, 12)
    ftm = rng.randint(fta // 2, fta) if fta else 0
    big = rng.random() < 0.3
    return StatLine(name, fgm, fga, tpm, tpa, ftm, fta, rng.randint(0, 5 if big else 2), rng.randint(1, 12 if big else 7),
                    rng.randint(0, 13), rng.randint(0, 4), rng.randint(0, 5 if big else 2), rng.randint(0, 6))


# Each task: (templates for train/val, templates for test, builder). A builder returns the
# format arguments and the answer sentence, computed from the same numbers.
Task = tuple[list[str], list[str], Callable]


def _team_city(rng, teams, players):
    t = rng.choice(teams)
    return {"team": t["full_name"]}, f"The {t['full_name']} are based in {t['city']}, {t['state']}.", "fact"


def _team_founded(rng, teams, players):
    t = rng.choice(teams)
    return {"team": t["full_name"]}, f"The {t['full_name']} were founded in {t['year_founded']}.", "fact"


def _team_abbr(rng, teams, players):
    t = rng.choice(teams)
    return {"team": t["full_name"]}, f"The abbreviation of the {t['full_name']} is {t['abbreviation']}.", "fact"


def _older_team(rng, teams, players):
    a, b = rng.sample([t for t in teams], 2)
    while a["year_founded"] == b["year_founded"]:
        a, b = rng.sample(teams, 2)
    a, b = sorted((a, b), key=lambda t: t["full_name"])  # one question per pair, not two mirror images
    old, gap = (a, b) if a["year_founded"] < b["year_founded"] else (b, a), abs(a["year_founded"] - b["year_founded"])
    first = old[0]
    return ({"a": a["full_name"], "b": b["full_name"]},
            f"The {first['full_name']} are older, by {gap} years.", "multi-step")


def _active(rng, teams, players):
    p = rng.choice(players)
    return {"player": p["full_name"]}, (f"Yes, {p['full_name']} is an active player." if p["is_active"]
                                        else f"No, {p['full_name']} is not an active player."), "fact"


def _stat_task(fn: Callable[[StatLine], str], kind: str):
    def build(rng, teams, players):
        s = random_line(rng, rng.choice([p for p in players if p["is_active"]])["full_name"])
        return {"line": s.text(), "player": s.name}, fn(s), kind
    return build


def _winner(rng, teams, players):
    a, b = rng.sample(teams, 2)
    qa = [rng.randint(18, 36) for _ in range(4)]
    qb = [rng.randint(18, 36) for _ in range(4)]
    while sum(qa) == sum(qb):
        qb[3] += 1
    ta, tb = sum(qa), sum(qb)
    win, lose, hi, lo = (a, b, ta, tb) if ta > tb else (b, a, tb, ta)
    return ({"a": a["full_name"], "b": b["full_name"], "qa": "-".join(map(str, qa)), "qb": "-".join(map(str, qb))},
            f"The {win['full_name']} won {hi}-{lo}, by {hi - lo} point{'s' if hi - lo != 1 else ''}.", "multi-step")


TASKS: dict[str, Task] = {
    "team_city": (["Where are the {team} based?", "In which city and state do the {team} play?"],
                  ["Name the home city and state of the {team}."], _team_city),
    "team_founded": (["When were the {team} founded?", "What year was the {team} franchise founded?"],
                     ["In which year did the {team} come into existence?"], _team_founded),
    "team_abbr": (["What is the abbreviation of the {team}?", "Give the three-letter code of the {team}."],
                  ["Which short code stands for the {team}?"], _team_abbr),
    "older_team": (["Which franchise is older, the {a} or the {b}, and by how many years?"],
                   ["Between the {a} and the {b}, which was founded first and how many years earlier?"], _older_team),
    "active": (["Is {player} an active NBA player?", "Does {player} still play in the NBA?"],
               ["Is {player} currently on an active NBA roster list?"], _active),
    "points": (["Stat line: {line}. How many points did {player} score?",
                "{line}. Compute the points scored."],
               ["Given the box-score line {line}, what is the point total?"],
               _stat_task(lambda s: f"{s.name} scored {s.pts} points.", "box-score")),
    "fg_pct": (["Stat line: {line}. What is {player}'s field-goal percentage?"],
               ["From {line}, compute the FG%."],
               _stat_task(lambda s: f"{s.name} shot {fg_pct(s)} from the field.", "box-score")),
    "efg_pct": (["Stat line: {line}. What is {player}'s effective field-goal percentage (eFG%)?"],
                ["From {line}, compute eFG% = (FGM + 0.5 x 3PM) / FGA."],
                _stat_task(lambda s: f"{s.name}'s eFG% is {efg_pct(s)}.", "box-score")),
    "ts_pct": (["Stat line: {line}. What is {player}'s true shooting percentage (TS%)?"],
               ["From {line}, compute TS% = PTS / (2 x (FGA + 0.44 x FTA))."],
               _stat_task(lambda s: f"{s.name}'s TS% is {ts_pct(s)}.", "box-score")),
    "rebounds": (["Stat line: {line}. How many total rebounds did {player} grab?"],
                 ["From {line}, add offensive and defensive rebounds."],
                 _stat_task(lambda s: f"{s.name} had {s.reb} rebound{'s' if s.reb != 1 else ''}.", "box-score")),
    "double": (["Stat line: {line}. Did {player} record a double-double or a triple-double?"],
               ["Using {line}, classify the game as double-double, triple-double or neither."],
               _stat_task(lambda s: f"{s.name} recorded {double_kind(s)} ({s.pts} PTS, {s.reb} REB, {s.ast} AST, "
                                    f"{s.stl} STL, {s.blk} BLK).", "classification")),
    "tier": (["Stat line: {line}. Classify {player}'s scoring night as star (30+), strong (20-29), solid (10-19) or quiet (<10)."],
             ["Given {line}, put the scoring in a tier: star 30+, strong 20-29, solid 10-19, quiet under 10."],
             _stat_task(lambda s: f"{s.pts} points makes it a {tier(s)} night.", "classification")),
    "winner": (["Quarter scores: {a} {qa}, {b} {qb}. Who won and by how much?"],
               ["By quarters the {a} scored {qa} and the {b} scored {qb}. Give the winner and the margin."], _winner),
}


def generate(n: int, split: str, seed: int, teams: list[dict], players: list[dict],
             exclude: set[str] | None = None) -> list[dict]:
    """n rows, round-robin over tasks; a task whose questions run out (30 teams x a few
    templates) drops out of the rotation instead of repeating itself."""
    rng = random.Random(f"{seed}:{split}")
    active = sorted(TASKS)
    rows, seen, misses = [], set(exclude or ()), {t: 0 for t in active}
    i = 0
    while len(rows) < n:
        if not active:
            raise ValueError(f"only {len(rows)} distinct questions possible for {split}")
        task = active[i % len(active)]
        i += 1
        train_t, test_t, build = TASKS[task]
        args, answer, kind = build(rng, teams, players)
        question = rng.choice(test_t if split == "test" else train_t).format(**args)
        if question in seen or answer in seen:
            misses[task] += 1
            if misses[task] > 200:
                active.remove(task)
            continue
        seen.add(question)
        if kind == "fact":
            seen.add(answer)  # one question per fact per split family: no paraphrase twins
        rows.append({
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question},
                         {"role": "assistant", "content": answer}],
            "task": task, "kind": kind, "answer": answer,
        })
    return rows


def _distractors(row: dict, rng: random.Random, teams: list[dict]) -> list[str]:
    import re

    answer, task = row["answer"], row["task"]
    if task == "active":
        return [answer.replace("Yes, ", "No, ").replace(" is an active", " is not an active")
                if answer.startswith("Yes") else answer.replace("No, ", "Yes, ").replace(" is not an active", " is an active")]
    if task == "double":
        kinds = ["a triple-double", "a double-double", "neither a double-double nor a triple-double"]
        now = next(k for k in kinds if f"recorded {k} (" in answer)
        return [answer.replace(f"recorded {now} (", f"recorded {k} (") for k in kinds if k != now]
    if task == "tier":
        now = re.search(r"a (\w+) night", answer).group(1)
        return [answer.replace(f"a {now} night", f"a {t} night") for t in ("star", "strong", "solid", "quiet") if t != now]
    if task in ("team_city", "team_abbr"):
        team = next(t for t in teams if t["full_name"] in answer)
        others = rng.sample([t for t in teams if t is not team and t["state"] != team["state"]], 3)
        if task == "team_city":
            return [answer.replace(f"{team['city']}, {team['state']}", f"{o['city']}, {o['state']}") for o in others]
        return [answer.replace(f" is {team['abbreviation']}.", f" is {o['abbreviation']}.") for o in others]
    nums = re.findall(r"\d+(?:\.\d+)?", answer)
    target = nums[-1]
    out: list[str] = []
    for delta in rng.sample([-4, -3, -2, -1, 1, 2, 3, 4], 8):
        new = f"{float(target) + delta * 1.3:.1f}" if "." in target else str(int(target) + delta)
        cand = answer[: answer.rfind(target)] + new + answer[answer.rfind(target) + len(target):]
        if cand != answer and cand not in out and not new.startswith("-") and new not in ("0", "0.0"):
            out.append(cand)
        if len(out) == 3:
            break
    return out


def multiple_choice(rows: list[dict], seed: int, teams: list[dict]) -> list[dict]:
    """The test split as multiple choice: the right sentence among 1-3 wrong ones of its kind."""
    rng = random.Random(f"{seed}:mc")
    out = []
    for row in rows:
        choices = [row["answer"], *_distractors(row, rng, teams)]
        rng.shuffle(choices)
        out.append({"question": row["messages"][1]["content"], "choices": choices,
                    "label": choices.index(row["answer"]), "task": row["task"]})
    return out


def preference_pairs(rows: list[dict], seed: int, teams: list[dict]) -> list[dict]:
    """DPO pairs: the prompt turns, the right answer (chosen) and a wrong one of its kind."""
    rng = random.Random(f"{seed}:pref")
    return [{"messages": row["messages"][:-1], "chosen": row["answer"],
             "rejected": rng.choice(_distractors(row, rng, teams))} for row in rows]
