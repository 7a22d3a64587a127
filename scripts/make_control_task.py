#!/usr/bin/env python3
"""Write eval/data/control.jsonl: ~200 general-knowledge multiple-choice questions.

The control task measures forgetting: a fine-tune on NBA analytics should not lower it.
Facts come from the tables below (checked by hand: capitals, chemical symbols, planets and
continents are textbook facts) and from arithmetic computed here, so every gold answer is
either a well-known fact or a computed number. Seeded; `make control` reproduces the file
(tests/test_control_task.py checks that, and recomputes every arithmetic answer).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "China": "Beijing", "India": "New Delhi", "Russia": "Moscow", "Canada": "Ottawa",
    "Australia": "Canberra", "Brazil": "Brasilia", "Argentina": "Buenos Aires", "Mexico": "Mexico City",
    "Egypt": "Cairo", "Kenya": "Nairobi", "Nigeria": "Abuja", "South Korea": "Seoul", "Thailand": "Bangkok",
    "Vietnam": "Hanoi", "Indonesia": "Jakarta", "Turkey": "Ankara", "Greece": "Athens", "Poland": "Warsaw",
    "Sweden": "Stockholm", "Norway": "Oslo", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Netherlands": "Amsterdam", "Belgium": "Brussels", "Austria": "Vienna", "Switzerland": "Bern",
    "Ireland": "Dublin", "Hungary": "Budapest", "Czech Republic": "Prague", "Peru": "Lima", "Chile": "Santiago",
    "Colombia": "Bogota", "Cuba": "Havana", "Iran": "Tehran", "Iraq": "Baghdad", "Saudi Arabia": "Riyadh",
    "Pakistan": "Islamabad", "Philippines": "Manila", "New Zealand": "Wellington", "Morocco": "Rabat",
    "Ethiopia": "Addis Ababa", "Ukraine": "Kyiv", "Romania": "Bucharest", "Iceland": "Reykjavik",
}
ELEMENTS = {
    "hydrogen": "H", "helium": "He", "lithium": "Li", "carbon": "C", "nitrogen": "N", "oxygen": "O",
    "fluorine": "F", "neon": "Ne", "sodium": "Na", "magnesium": "Mg", "aluminium": "Al", "silicon": "Si",
    "phosphorus": "P", "sulfur": "S", "chlorine": "Cl", "argon": "Ar", "potassium": "K", "calcium": "Ca",
    "iron": "Fe", "copper": "Cu", "zinc": "Zn", "silver": "Ag", "gold": "Au", "mercury": "Hg", "lead": "Pb",
    "tin": "Sn", "nickel": "Ni", "uranium": "U", "iodine": "I", "platinum": "Pt",
}
FACTS = [
    ("Which planet is closest to the Sun?", "Mercury", ["Venus", "Mars", "Earth"]),
    ("Which planet is the largest in the Solar System?", "Jupiter", ["Saturn", "Neptune", "Earth"]),
    ("Which planet is known as the Red Planet?", "Mars", ["Venus", "Jupiter", "Mercury"]),
    ("How many planets are in the Solar System?", "8", ["7", "9", "10"]),
    ("Which is the largest ocean on Earth?", "Pacific Ocean", ["Atlantic Ocean", "Indian Ocean", "Arctic Ocean"]),
    ("On which continent is Egypt?", "Africa", ["Asia", "Europe", "South America"]),
    ("On which continent is Peru?", "South America", ["Africa", "Asia", "Europe"]),
    ("How many continents are there?", "7", ["5", "6", "8"]),
    ("What is the boiling point of water at sea level in degrees Celsius?", "100", ["90", "0", "120"]),
    ("What is the freezing point of water in degrees Celsius?", "0", ["32", "-10", "4"]),
    ("What gas do plants take in for photosynthesis?", "carbon dioxide", ["oxygen", "nitrogen", "helium"]),
    ("What is the chemical formula of water?", "H2O", ["CO2", "O2", "NaCl"]),
    ("How many legs does an insect have?", "6", ["4", "8", "10"]),
    ("How many sides does a hexagon have?", "6", ["5", "7", "8"]),
    ("How many sides does a pentagon have?", "5", ["4", "6", "7"]),
    ("How many degrees are in a right angle?", "90", ["45", "180", "60"]),
    ("How many degrees do the angles of a triangle add up to?", "180", ["90", "270", "360"]),
    ("How many minutes are in an hour?", "60", ["100", "30", "24"]),
    ("How many hours are in a day?", "24", ["12", "20", "48"]),
    ("How many days are in a leap year?", "366", ["365", "364", "360"]),
    ("Which is the smallest prime number?", "2", ["1", "3", "0"]),
    ("Who wrote 'Romeo and Juliet'?", "William Shakespeare", ["Charles Dickens", "Jane Austen", "Mark Twain"]),
    ("Which organ pumps blood through the human body?", "the heart", ["the liver", "the lungs", "the kidney"]),
    ("What is the largest mammal?", "the blue whale", ["the elephant", "the giraffe", "the hippopotamus"]),
    ("What is the square root of 81?", "9", ["8", "7", "9.5"]),
    ("What is the hardest natural substance?", "diamond", ["gold", "iron", "quartz"]),
    ("Which language has the most native speakers?", "Mandarin Chinese", ["English", "Spanish", "Hindi"]),
    ("In which country are the pyramids of Giza?", "Egypt", ["Mexico", "Peru", "Greece"]),
    ("How many strings does a standard violin have?", "4", ["5", "6", "3"]),
    ("What colour do you get by mixing blue and yellow?", "green", ["purple", "orange", "red"]),
]


def main(out: Path = Path("eval/data/control.jsonl")) -> None:
    rng = random.Random(1234)
    rows = []
    countries = sorted(CAPITALS)
    for c in countries:
        wrong = rng.sample([CAPITALS[o] for o in countries if o != c], 3)
        rows.append(("geography", f"What is the capital of {c}?", CAPITALS[c], wrong))
    names = sorted(ELEMENTS)
    for e in names:
        wrong = rng.sample([ELEMENTS[o] for o in names if o != e], 3)
        rows.append(("chemistry", f"What is the chemical symbol for {e}?", ELEMENTS[e], wrong))
    for q, a, wrong in FACTS:
        rows.append(("general", q, a, wrong))
    while len(rows) < 200:
        a, b = rng.randint(12, 99), rng.randint(3, 40)
        op = rng.choice(["+", "-", "*"])
        v = {"+": a + b, "-": a - b, "*": a * b}[op]
        wrong = rng.sample(sorted(x for x in {v + 1, v - 1, v + 10, v - 10, v + 2} if x != v), 3)
        if any(r[1] == f"What is {a} {op} {b}?" for r in rows):
            continue
        rows.append(("arithmetic", f"What is {a} {op} {b}?", str(v), [str(w) for w in wrong]))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for topic, q, answer, wrong in rows:
            choices = [answer, *wrong]
            rng.shuffle(choices)
            f.write(json.dumps({"question": q, "choices": choices, "label": choices.index(answer), "topic": topic}) + "\n")
    print(f"wrote {out}: {len(rows)} questions")


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:2]))
