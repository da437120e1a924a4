#!/usr/bin/env python3
"""Derive fosdem-2025-floating.xml from the real fosdem-2025.xml.

Older frab/pentabarf exports (FOSDEM's own before 2020, for one) give each
event only a local `<start>` (HH:MM) on its `<day date="...">`: no `<date>`
with a UTC offset, no `<time_zone_name>`, and days without `start`/`end`
instants. This script turns the real FOSDEM 2025 export into such a file, so
that the importer can be checked to read those local times in the event's
zone (Europe/Brussels) and give exactly the instants of the original.

Run from anywhere (Python 3, standard library only):

    python3 tests/data/schedules/make_floating_fosdem.py

It reads `fosdem-2025.xml` next to this script and writes
`fosdem-2025-floating.xml` next to it, changing only these lines and
attributes (everything else is kept byte for byte):

* the `<time_zone_name>Europe/Brussels</time_zone_name>` line is removed;
* every event's `<date>...</date>` line is removed (943 lines);
* each `<day ...>` keeps `index` and `date` but loses its `start` and `end`
  attributes (instants with an offset).

The script checks that no offset (`+01:00`) and no zone name is left.
"""

import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "fosdem-2025.xml")
TARGET = os.path.join(HERE, "fosdem-2025-floating.xml")

DATE_LINE = re.compile(r"^\s*<date>[^<]*</date>\n", re.MULTILINE)
ZONE_LINE = re.compile(r"^\s*<time_zone_name>[^<]*</time_zone_name>\n", re.MULTILINE)
DAY_INSTANTS = re.compile(r'(<day [^>]*?) start="[^"]*" end="[^"]*"')


def main():
    with open(SOURCE, encoding="utf-8", newline="") as f:
        text = f.read()
    text, dates = DATE_LINE.subn("", text)
    text, zones = ZONE_LINE.subn("", text)
    text, days = DAY_INSTANTS.subn(r"\1", text)
    if (dates, zones, days) != (943, 1, 2):
        sys.exit(f"unexpected source: {dates} <date>, {zones} zone, {days} <day> lines changed")
    for left in ["+01:00", "time_zone_name", "Europe/Brussels"]:
        if left in text:
            sys.exit(f"{left!r} is still in the output")
    with open(TARGET, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    print(f"wrote {TARGET}: {dates} <date> lines, the zone and {days} day instants removed")


if __name__ == "__main__":
    main()
