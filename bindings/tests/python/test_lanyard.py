"""The Python bindings against a real lanyard-server (started by bindings/tests/python.rs).

Environment: LANYARD_ORG_LINK, LANYARD_ANN_LINK, LANYARD_ANN2_LINK (invite
links for an organizer, an attendee's phone and the same attendee's laptop),
LANYARD_WORK (a scratch directory), PYTHONPATH holding the generated module.
Exits non-zero with the failing check's message on any failure.
"""

import asyncio
import os
import threading
import time

import lanyard_ffi as ly

DEADLINE = 60.0


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def thread_name():
    """The OS name of the calling thread (Python calls foreign threads Dummy-N)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
            return f.read().strip()
    except OSError:
        return threading.current_thread().name


class Listener(ly.LanyardListener):
    """Collects what the core reports, from the core's threads."""

    def __init__(self):
        self.cv = threading.Condition()
        self.statuses = []
        self.alerts = []
        self.threads = set()

    def on_status(self, status):
        with self.cv:
            self.statuses.append(status)
            self.threads.add(thread_name())
            self.cv.notify_all()

    def on_alert(self, alert):
        with self.cv:
            self.alerts.append(alert)
            self.threads.add(thread_name())
            self.cv.notify_all()

    def wait_for(self, cond, what):
        with self.cv:
            ok = self.cv.wait_for(lambda: cond(self), timeout=DEADLINE)
        check(ok, f"timed out waiting for {what}; statuses={self.statuses[-3:]} alerts={self.alerts}")


def client(name):
    return ly.LanyardClient.open(os.path.join(os.environ["LANYARD_WORK"], name))


# 2026-03-09 09:00 in America/New_York (EDT, UTC-4) is 13:00Z.
T0 = 1_773_061_200


def session(sid, title, room, start):
    return ly.NewSession(
        id=sid, title=title, abstract_text=f"About {title}", room=room,
        start_unix=start, end_unix=start + 3600, track="Core", speakers=["Ada Lovelace"],
    )


async def main():
    # A typed error for a bad invite link, and nothing stored.
    bad = client("bad")
    try:
        bad.join("https://example.org/not-a-lanyard-link")
        raise AssertionError("a bad link was accepted")
    except ly.LanyardError.InvalidLink as e:
        check("lanyard://" in str(e), f"the message should say what a link looks like: {e}")
    try:
        bad.sessions()
        raise AssertionError("sessions() before join")
    except ly.LanyardError.NotJoined:
        pass
    check(bad.identity() is None, "no identity after a refused link")

    # The organizer publishes an agenda.
    org = client("org")
    check(org.join(os.environ["LANYARD_ORG_LINK"]).role == "organizer", "organizer link")
    org.set_event("PyConf", "America/New_York")
    org.add_session(session("keynote", "Opening keynote", "Hall A", T0))
    org.add_session(session("rust", "Rust at scale", "Room 2", T0 + 7200))
    report = await org.sync_now(60)
    check(report.acknowledged_changes >= 3, f"organizer sync: {report}")

    # The attendee joins and syncs the agenda.
    ann = client("ann")
    ann.join(os.environ["LANYARD_ANN_LINK"])
    report = await ann.sync_now(60)
    check(report.received_changes > 0, f"attendee sync: {report}")
    check([s.id for s in ann.sessions()] == ["keynote", "rust"], f"agenda: {ann.sessions()}")
    check(ann.days() == ["2026-03-09"], f"days: {ann.days()}")
    check([s.id for s in ann.sessions_in_room("Room 2")] == ["rust"], "by room")
    check([s.id for s in ann.search("rust SCALE")] == ["rust"], "search")
    check(ann.search("no such words") == [], "search miss")
    check(ann.event_time(T0) == "2026-03-09T09:00:00-04:00", ann.event_time(T0))
    check(ann.session("keynote").status == ly.SessionStatus.SCHEDULED, "status enum")

    # A typed error for an attendee editing the agenda; nothing changes.
    try:
        ann.cancel_session("keynote")
        raise AssertionError("an attendee cancelled a session")
    except ly.LanyardError.OrganizersOnly:
        pass

    # A note taken offline (no connection is open), then synced.
    ann.set_note("keynote", "Ask about offline sync")
    ann.splice_note("keynote", 0, 0, "Q: ")
    ann.set_bookmark("keynote", True)
    check(ann.status().pending_changes > 0, "edits wait for a sync")
    check(ann.note("keynote") == "Q: Ask about offline sync", ann.note("keynote"))
    await ann.sync_now(60)
    check(ann.status().pending_changes == 0, f"acknowledged: {ann.status()}")
    # Nothing was refused: resolving does nothing, nothing is kept.
    report = ann.resolve_refused()
    check(report.set_aside == 0 and report.kept == [], f"resolve: {report}")
    check(ann.kept_edits() == [] and ann.status().kept_edits == 0, "no kept edits")
    # A note over the server's document limit is refused before it exists.
    try:
        ann.set_note("huge", "x" * (9 * 1024 * 1024))
        raise AssertionError("a 9 MiB note was accepted")
    except ly.LanyardError.TooLarge as e:
        check("max_attendee_doc" in str(e), str(e))
    check(ann.note("huge") == "", "nothing changed")
    # The server has it: the attendee's other device receives it.
    laptop = client("ann-laptop")
    laptop.join(os.environ["LANYARD_ANN2_LINK"])
    await laptop.sync_now(60)
    check(laptop.note("keynote") == "Q: Ask about offline sync", f"laptop note: {laptop.notes()}")
    check(laptop.bookmarks() == ["keynote"], "laptop bookmarks")

    # Background sync with a listener: status changes and alerts arrive.
    listener = Listener()
    ann.set_listener(listener)
    ann.start_sync()
    listener.wait_for(lambda l: any(s.connected for s in l.statuses), "connected")
    org.move_session("keynote", "Hall B", T0 + 3600, T0 + 7200)
    org.announce("Coffee in the lobby")
    await org.sync_now(60)
    listener.wait_for(lambda l: len(l.alerts) >= 2, "two alerts")
    moved = [a for a in listener.alerts if a.kind == ly.AlertKind.MOVED]
    check(len(moved) == 1, f"one move: {listener.alerts}")
    check(moved[0].bookmarked, "the move touches a bookmark")
    check(moved[0].session.room == "Hall B", moved[0])
    check(moved[0].previous_room == "Hall A", moved[0])
    check("Your bookmarked session" in moved[0].message and "Hall B at 10:00" in moved[0].message,
          moved[0].message)
    ann_alert = [a for a in listener.alerts if a.kind == ly.AlertKind.ANNOUNCEMENT]
    check(ann_alert and ann_alert[0].announcement.text == "Coffee in the lobby", listener.alerts)
    check(all(t.startswith("lanyard-core") for t in listener.threads),
          f"callbacks come from the core's threads: {listener.threads}")
    # After the talk the organizer adds its recording: the bookmark brings an alert.
    rec = "https://video.example.org/pyconf/keynote.mp4"
    try:
        org.add_session_link("keynote", "not a url", "")
        raise AssertionError("a bad URL was accepted")
    except ly.LanyardError as e:
        check("is not a web link" in str(e), str(e))
    org.add_session_link("keynote", rec, "Recording")
    await org.sync_now(60)
    listener.wait_for(lambda l: any(a.kind == ly.AlertKind.LINK for a in l.alerts), "link alert")
    link = [a for a in listener.alerts if a.kind == ly.AlertKind.LINK][0]
    check(link.message.startswith('The recording of "Opening keynote" is online'), link.message)
    check(link.link.url == rec and link.link.title == "Recording", link)
    check(ann.session("keynote").links == [ly.Link(url=rec, title="Recording")],
          ann.session("keynote").links)
    # A network change keeps the connection (or brings it back at once).
    ann.network_changed()
    org.cancel_session("rust")
    await org.sync_now(60)
    listener.wait_for(lambda l: any(a.kind == ly.AlertKind.CANCELLED for a in l.alerts), "cancel alert")
    await ann.stop_sync()
    listener.wait_for(lambda l: not l.statuses[-1].connected, "disconnected")
    ann.clear_listener()

    # Seats: a workshop of one seat, tomorrow.
    tomorrow = int(time.time()) + 86400
    org.add_session(session("lab", "Hands-on lab", "Lab", tomorrow))
    org.set_capacity("lab", 1)
    await org.sync_now(60)
    await ann.sync_now(60)
    check(ann.session("lab").capacity == 1, ann.session("lab"))
    # Reserved offline: pending until the server decides, then confirmed.
    ann.reserve("lab")
    check([r.state for r in ann.reservations()] == [ly.ReservationState.PENDING], ann.reservations())
    await ann.sync_now(60)
    mine = ann.reservations()
    check(mine[0].state == ly.ReservationState.CONFIRMED, f"ann: {mine}")
    check(ann.seat_pass("lab").startswith("LYP1."), "a pass for the confirmed seat")
    # Bob waits, listening; ann gives her seat back; bob is promoted and told.
    bob = client("bob")
    bob.join(os.environ["LANYARD_BOB_LINK"])
    await bob.sync_now(60)
    bob.reserve("lab")
    await bob.sync_now(60)
    waiting = bob.reservations()[0]
    check(waiting.state == ly.ReservationState.WAITLISTED and waiting.position == 1, waiting)
    bob_listener = Listener()
    bob.set_listener(bob_listener)
    bob.start_sync()
    bob_listener.wait_for(lambda l: any(s.connected for s in l.statuses), "bob connected")
    ann.cancel_reservation("lab")
    await ann.sync_now(60)
    bob_listener.wait_for(
        lambda l: any(a.kind == ly.AlertKind.SEAT_PROMOTED for a in l.alerts), "promotion alert")
    promoted = [a for a in bob_listener.alerts if a.kind == ly.AlertKind.SEAT_PROMOTED][0]
    check("A seat opened up" in promoted.message, promoted.message)
    check(promoted.reservation.state == ly.ReservationState.CONFIRMED, promoted)
    check(bob.reservations()[0].state == ly.ReservationState.CONFIRMED, bob.reservations())
    await bob.stop_sync()
    bob.clear_listener()
    print("python bindings: all checks passed")


if __name__ == "__main__":
    started = time.monotonic()
    asyncio.run(main())
    print(f"python bindings: {time.monotonic() - started:.1f} s")
