"""The cloud store the heartbeat's reply names: an edge that hears of another one sends again what it acked.

The cloud keeps an identity with its data (made at random on the store's
first use; cloud_app.store). The edge records the one that acknowledged its
tuples (EdgeStatus.cloud_store). When the cloud answers from one it has not
heard of, that store was emptied or replaced under the same address, and
every acknowledged tuple the edge still holds (retention has not deleted) is
put back, as RESEND: sent again where fresh tuples leave room in a batch, so
the page stays fresh, and not in the backlog, so the ingest does not pause
for them at its disk budget. The cloud stores each once, and counts each once. They
are put back a chunk at a time, a bounded part of each beat, so the beats go
on while millions are; the new identity is recorded only once all are, so an
edge restarted half way starts again. Only the tuples stored before the change
are put back: those stored after it go to the new store. The tuples that were
in flight when the change was heard are looked at again a little later: a
reply the old store sent and the sender applied only after the change made
them ACKED then (one the new store answered is sent once more: the cloud
absorbs the copy, and `sent_again` counts it). That second look is kept in
memory only: an edge restarted within it skips it.

A store can also lose part of what it acknowledged and keep its identity:
restored from an older copy, a replica promoted before it had everything.
So each beat asks about a few acknowledged tuples (edge_app/store_probes.py),
and one the store no longer holds makes the edge send every acknowledged
tuple again, as for a new store: at most every LOSS_RESEND_EVERY_SECONDS, so
a store that keeps losing what it takes (evicting it) is not sent everything
at every beat; the tuples it lacks are asked about until then.

A store heard of before (replicas on two stores answering in turn, or one
back) is said, a few times an hour, without sending everything again at each
turn: what one acknowledged is not in the other, which only mending the
setup cures. The stores heard of are kept in memory: an edge restarted while
replicas take turns sends everything once more.
"""

import logging
import time

from django.db.models import F, Max
from django.utils import timezone

from edge_app.models import Status, WindowAggregate, chunks
from edge_app.store_probes import COLUMNS, StoreProbes
from fogwire.protocol import MAX_STORE_ID

log = logging.getLogger("fog.edge.link")

RESEND_CHUNK = 10_000  # acknowledged tuples put back to RESEND in one transaction
RESEND_SECONDS_PER_BEAT = 0.5  # a beat spends at most about this on it; the rest waits for the next beats
# The tuples in flight at the change are looked at again this long after it: by then any reply to them has
# been applied or has timed out (the sender waits ACK_TIMEOUT_MS, 3 s, for each of its requests in flight in
# turn: 4 by default, 10 leave room).
RECHECK_AFTER_SECONDS = 30.0
TURNS_LOG_LINES, TURNS_LOG_SECONDS = 3, 3600
LOSS_RESEND_EVERY_SECONDS = 600  # everything is sent again for a loss the probes found at most this often


class StoreWatch:
    def __init__(self):
        self.heard = set()  # the stores this process heard of, the recorded one included
        # [store, last id put back, how many, newest id at the change, when it was heard] while putting back
        self.resend = None
        self.recheck = None  # (monotonic when, ids in flight at the change)
        self.turns_said = []  # monotonic times of the "stores take turns" lines (TURNS_LOG_*)
        self.turned = None  # monotonic time stores last took turns: probes mean nothing then (see probes)
        self.probing = StoreProbes()
        self.loss_resent = None  # monotonic time everything was last sent again for a loss the probes found
        self.loss_waiting = None  # lost tuples asked about again until LOSS_RESEND_EVERY_SECONDS are over

    def probes(self, since):
        """The acknowledged tuples this beat asks the store about (edge_app/store_probes.py), those acknowledged
        at `since` or later (EdgeStatus.cloud_store_since). None while tuples are being put back or looked at
        again (the store may not have them yet), or for TURNS_LOG_SECONDS after stores took turns (each holds
        what it acknowledged, not what the other did)."""
        if self.resend or self.recheck or (self.turned is not None
                                           and time.monotonic() - self.turned < TURNS_LOG_SECONDS):
            return ()
        return self.probing.pick(since)

    def hear(self, recorded, store, changes, probes=(), held=None, since=None):
        """`recorded`: the store EdgeStatus names ('' none yet), recorded at `since`; `store`: the one this beat's
        reply named ('': it did not say); `held`: whether it holds each of the beat's `probes` (None: not said).
        Puts the EdgeStatus fields to update into `changes`."""
        again = self._recheck()
        if recorded and since is None:
            changes["cloud_store_since"] = timezone.now()  # recorded by an edge before probes: asked from now on
        if store and store == recorded and not self.resend and held is not None and probes:
            missing = self.probing.answered(probes, held)
            if missing:
                self._lost_some(store, missing, changes)
        if recorded:
            self.heard.add(recorded)
        busy = self.resend[0] if self.resend else None
        if store and store not in (recorded, busy):
            if not recorded:
                self._record(changes, store)  # the first answer that names one: nothing was lost before it
            elif store in self.heard:
                # Since when to ask stays: what the other store acknowledged meanwhile is asked about too (once
                # stores no longer take turns), so a store failed back to is sent what it lacks.
                changes["cloud_store"] = store
                self.probing.forget()
                self._say_turns(recorded, store)
            elif recorded == lost_mark(store):
                self._send_all_again(store)
                log.error("every acknowledged tuple this edge holds is sent again to the cloud's store %s, which lost "
                          "some of them: an earlier run began to and did not finish", store)
            else:
                self._send_all_again(store)
                log.error("the cloud's store is not the one that acknowledged this edge's tuples (store %s, now %s): "
                          "it was emptied or replaced. Every acknowledged tuple this edge still holds is sent again "
                          "(the cloud stores each once); any that retention deleted here already can't be",
                          recorded, store)
            self.heard.add(store)
        if self.resend:
            again += self._put_back_some(changes)
        if again:
            changes["sent_again"] = F("sent_again") + again

    def _record(self, changes, store, since=None):
        """EdgeStatus names `store` from now on, and the probes ask it about tuples acknowledged from `since`
        (default now) on."""
        changes.update(cloud_store=store, cloud_store_since=since or timezone.now())
        self.probing.forget()

    def _send_all_again(self, store):
        """Put back, from the next beats on, every acknowledged tuple up to the newest now (those stored later
        go to `store` only); those in flight now are looked at again later."""
        in_flight = list(WindowAggregate.objects.filter(status=Status.SENT).values_list("id", flat=True))
        newest = WindowAggregate.objects.aggregate(newest=Max("id"))["newest"] or 0
        self.resend = [store, 0, 0, newest, timezone.now()]
        self.probing.forget()
        earlier = self.recheck[1] if self.recheck else []  # a change heard just before this one
        self.recheck = (time.monotonic() + RECHECK_AFTER_SECONDS, earlier + in_flight)

    def _lost_some(self, store, missing, changes):
        """The store said it does not hold `missing` (probes): those still acknowledged here were lost there.
        Until all are put back, EdgeStatus names the store as one that lost them (lost_mark), so an edge
        restarted half way starts again, as after a change of store."""
        lost = [probe for probe in WindowAggregate.objects.filter(
            id__in=[probe[0] for probe in missing], status=Status.ACKED).values_list(*COLUMNS)
            if probe in missing]  # not deleted by retention, or put back, since
        if not lost:
            return
        said = ", ".join(f"{household} window {start}" for _, household, start, _ in lost)
        now = time.monotonic()
        if self.loss_resent is not None and now - self.loss_resent < LOSS_RESEND_EVERY_SECONDS:
            if self.loss_waiting is None:  # said once, not at every beat that asks again
                log.error("the cloud's store %s lost tuples it acknowledged again (%s): everything is sent again "
                          "in %.0f s, not sooner; does it keep what it acknowledges?", store, said,
                          LOSS_RESEND_EVERY_SECONDS - (now - self.loss_resent))
            self.loss_waiting = lost
            self.probing.ask_again(lost)
            return
        self.loss_resent, self.loss_waiting = now, None
        self._send_all_again(store)
        changes["cloud_store"] = lost_mark(store)
        log.error("the cloud's store %s no longer holds tuples it acknowledged (%s): restored from an older copy, "
                  "or a replica promoted before it had everything? Every acknowledged tuple this edge still holds "
                  "is sent again (the cloud stores each once)", store, said)

    def _put_back_some(self, changes):
        store, after, moved, newest, heard_at = self.resend
        deadline, this_beat = time.monotonic() + RESEND_SECONDS_PER_BEAT, 0
        acked = WindowAggregate.objects.filter(status=Status.ACKED, id__lte=newest)
        while True:
            ids = list(acked.filter(id__gt=after).order_by("id").values_list("id", flat=True)[:RESEND_CHUNK])
            if not ids:
                break
            this_beat += acked.filter(id__gt=after, id__lte=ids[-1]).update(status=Status.RESEND,
                                                                            next_attempt_at=None)
            after = ids[-1]
            if time.monotonic() >= deadline:
                self.resend = [store, after, moved + this_beat, newest, heard_at]
                return this_beat
        self.resend = None
        self.heard.add(store)
        # Every tuple acknowledged now, or put back to be, is this store's: those acknowledged after it was
        # heard, and every other one once it is sent again (it keeps its first acknowledgement's time).
        oldest = WindowAggregate.objects.filter(acked_at__isnull=False).order_by("acked_at").values_list(
            "acked_at", flat=True).first()
        self._record(changes, store, since=min(oldest or heard_at, heard_at))
        log.error("%d acknowledged tuples are sent again to the cloud's store %s", moved + this_beat, store)
        return this_beat

    def _recheck(self):
        """The tuples in flight at the change that are ACKED now, back to RESEND; returns how many."""
        if not self.recheck or time.monotonic() < self.recheck[0]:
            return 0
        ids, self.recheck = self.recheck[1], None
        moved = sum(WindowAggregate.objects.filter(id__in=chunk, status=Status.ACKED).update(
            status=Status.RESEND, next_attempt_at=None) for chunk in chunks(ids))
        if moved:
            log.error("%d tuples in flight when the cloud's store changed are sent again too (one the old store "
                      "acknowledged may have been applied after the change)", moved)
        return moved

    def _say_turns(self, recorded, store):
        now = self.turned = time.monotonic()
        self.turns_said = [t for t in self.turns_said if now - t < TURNS_LOG_SECONDS]
        if len(self.turns_said) < TURNS_LOG_LINES:
            self.turns_said.append(now)
            log.error("the cloud answers from store %s, then from %s again: do its replicas use different Redis "
                      "servers? What one acknowledged is not in the other; not sent again each time they take turns",
                      recorded, store)


def lost_mark(store):
    """What EdgeStatus.cloud_store names while what `store` lost is put back: no store's identity."""
    return f"lost-{store}"[:MAX_STORE_ID]
