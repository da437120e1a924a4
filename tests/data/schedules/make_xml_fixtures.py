#!/usr/bin/env python3
"""Derive schedule.xml fixtures from frab-camp2019.json.

No real frab/pentabarf `schedule.xml` export was available (voc/schedule never
committed one), so the XML importer is tested on XML written from the real
JSON export instead. Run from anywhere:

    python3 tests/data/schedules/make_xml_fixtures.py

It writes, next to this script:

* `frab-camp2019.xml`: the c3voc `schedule.xml.xsd` layout
  (`schedule/conference`, `day/room name=.../event guid id`), each event with
  `date` (RFC 3339 with offset) and `start` (HH:MM).
* `frab-camp2019-noroom.xml`: the older layout, events directly under `day`
  (no `<room name>` wrapper; the room only as the event's `<room>` child),
  with `start` only (no `<date>`), so a reader must combine the day's `date`
  with the local HH:MM in the conference time zone.

Every text value is written exactly as in the JSON (leading and trailing
spaces kept; carriage returns as `&#13;`, since XML parsers turn a literal
CR LF into LF). Two values are lower-cased so that the first file validates
against the XSD: the conference acronym (`Camp2019`, the XSD wants
`[a-z0-9_-]{4,}`) and the event slugs (`Camp2019-10386-...`). Event `logo`s
are left out: they are relative paths and the XSD wants http(s) URLs.

When lxml is installed, `frab-camp2019.xml` is validated against
`schedule.xml.xsd` (looked up next to this script, then in
/work/shared/data/schedules/); otherwise validation is skipped.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "frab-camp2019.json")
XSD_CANDIDATES = [
    os.path.join(HERE, "schedule.xml.xsd"),
    "/work/shared/data/schedules/schedule.xml.xsd",
]


def esc(text):
    """Escape element text; CR as a character reference so it survives parsing."""
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\r", "&#13;")
    )


def attr(text):
    """Escape an attribute value (double-quoted)."""
    return (
        esc(str(text))
        .replace('"', "&quot;")
        .replace("\n", "&#10;")
        .replace("\t", "&#9;")
    )


def element(name, value, indent):
    value = "" if value is None else str(value)
    if value == "":
        return f"{indent}<{name}/>"
    return f"{indent}<{name}>{esc(value)}</{name}>"


def conference_xml(schedule, conference):
    lines = ["  <conference>"]
    lines.append(element("title", conference["title"], "    "))
    lines.append(element("acronym", conference["acronym"].lower(), "    "))
    lines.append(element("start", conference["start"], "    "))
    lines.append(element("end", conference["end"], "    "))
    lines.append(element("days", conference["daysCount"], "    "))
    lines.append(element("timeslot_duration", conference["timeslot_duration"], "    "))
    lines.append(element("base_url", schedule["base_url"], "    "))
    lines.append(element("time_zone_name", conference["time_zone_name"], "    "))
    lines.append("  </conference>")
    return lines


def event_xml(event, indent, with_date):
    inner = indent + "  "
    lines = [f'{indent}<event guid="{attr(event["guid"])}" id="{attr(event["id"])}">']
    if with_date:
        lines.append(element("date", event["date"], inner))
    lines.append(element("start", event["start"], inner))
    lines.append(element("duration", event["duration"], inner))
    lines.append(element("room", event["room"], inner))
    lines.append(element("slug", event["slug"].lower(), inner))
    lines.append(element("url", event["url"], inner))
    lines.append(element("title", event["title"], inner))
    lines.append(element("subtitle", event["subtitle"], inner))
    lines.append(element("track", event["track"], inner))
    lines.append(element("type", event["type"], inner))
    lines.append(element("language", event["language"], inner))
    lines.append(element("abstract", event["abstract"], inner))
    lines.append(element("description", event["description"], inner))
    lines.append(f"{inner}<recording>")
    lines.append(element("license", event["recording_license"], inner + "  "))
    optout = "true" if event["do_not_record"] else "false"
    lines.append(element("optout", optout, inner + "  "))
    lines.append(f"{inner}</recording>")
    if event["persons"]:
        lines.append(f"{inner}<persons>")
        for person in event["persons"]:
            lines.append(
                f'{inner}  <person id="{attr(person["id"])}">'
                f'{esc(person["public_name"])}</person>'
            )
        lines.append(f"{inner}</persons>")
    else:
        lines.append(f"{inner}<persons/>")
    lines.append(f"{indent}</event>")
    return lines


def day_open(day):
    return (
        f'  <day index="{attr(day["index"])}" date="{attr(day["date"])}" '
        f'start="{attr(day["day_start"])}" end="{attr(day["day_end"])}">'
    )


def schedule_xml(data, with_rooms):
    schedule = data["schedule"]
    conference = schedule["conference"]
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<schedule>"]
    lines.append(element("version", schedule["version"], "  "))
    lines.extend(conference_xml(schedule, conference))
    for day in conference["days"]:
        lines.append(day_open(day))
        if with_rooms:
            for room, events in day["rooms"].items():
                lines.append(f'    <room name="{attr(room)}">')
                for event in events:
                    lines.extend(event_xml(event, "      ", with_date=True))
                lines.append("    </room>")
        else:
            events = [e for room_events in day["rooms"].values() for e in room_events]
            events.sort(key=lambda e: (e["date"], e["room"]))
            for event in events:
                lines.extend(event_xml(event, "    ", with_date=False))
        lines.append("  </day>")
    lines.append("</schedule>")
    return "\n".join(lines) + "\n"


def validate(path):
    try:
        from lxml import etree
    except ImportError:
        print("lxml not available: skipped XSD validation of", os.path.basename(path))
        return
    xsd = next((p for p in XSD_CANDIDATES if os.path.exists(p)), None)
    if xsd is None:
        print("schedule.xml.xsd not found: skipped XSD validation")
        return
    schema = etree.XMLSchema(etree.parse(xsd))
    doc = etree.parse(path)
    if not schema.validate(doc):
        for error in schema.error_log:
            print(f"{path}:{error.line}: {error.message}", file=sys.stderr)
        sys.exit(1)
    print(os.path.basename(path), "is valid against", xsd)


def main():
    with open(SOURCE, encoding="utf-8") as f:
        data = json.load(f)
    outputs = [
        ("frab-camp2019.xml", True),
        ("frab-camp2019-noroom.xml", False),
    ]
    for name, with_rooms in outputs:
        path = os.path.join(HERE, name)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(schedule_xml(data, with_rooms))
        print("wrote", path)
    validate(os.path.join(HERE, "frab-camp2019.xml"))


if __name__ == "__main__":
    main()
