"""Which acknowledged tuples a heartbeat asks the cloud's store about (wire.MAX_PROBES at most), and what its
answer says: a store that lost part of what it acknowledged and kept its identity (restored from an older
copy, a replica promoted before it had everything) no longer holds some of them.

Each beat asks about:
- the *anchor*, the newest tuple the store last said it holds: a store set back to any time before that
  answer lacks it, however many tuples it acknowledged since (which a probe of only the newest would find
  there);
- the newest acknowledged tuple, which becomes the anchor once the store says it holds it;
- one acknowledged about a random time between the store's recording (EdgeStatus.cloud_store_since) and the
  newest acknowledgement: at a steady rate of acknowledgements, a scattered loss of a fraction f of the tuples
  is found within about 1/f beats (tuples acknowledged in a burst are asked about less), once none waits to
  be sent again;
- those a beat asked about that got no answer, first: a reply that does not come can't hide a loss.

Only tuples acknowledged since the store was recorded are asked about: those acknowledged before (by a store
since replaced, or under another edge id with the same database) were never that store's to hold.
"""

import random

from edge_app.models import Status, WindowAggregate
from fogwire import protocol as wire

COLUMNS = ("id", "household", "window_start", "window_end")  # a probe, as wire.heartbeat sends it
SPREAD = 1000  # the random probe is one of this many acknowledged from its random time on


class StoreProbes:
    def __init__(self):
        self.asked = ()  # the probes of the last beat, until a reply answers them
        self.anchor = None  # the newest tuple the store said it holds
        self.newest = None  # the newest acknowledged tuple when the last beat asked

    def pick(self, since):
        """The probes for this beat (COLUMNS tuples), for tuples acknowledged at `since` or later."""
        if since is None:
            return ()
        acked = WindowAggregate.objects.acked_since(since).values_list(*COLUMNS)
        newest = acked.order_by("-acked_at").values_list(*COLUMNS, "acked_at").first()
        self.newest = newest[:-1] if newest else None
        some = None
        # Not while tuples wait to be sent again: they keep their first acknowledgement's time, and a random time
        # among millions of them would read them all to find acknowledged ones.
        if newest is not None and not WindowAggregate.objects.of_status(Status.RESEND).exists():
            # Up to the newest acknowledgement, not to now: after a burst and a quiet spell every beat still
            # asks about one. A batch's tuples share one acknowledgement time: any of the next few from it.
            # One lower bound: given two on acked_at, SQLite walks its index from the first (`since`) and filters
            # by the second, so each beat read every tuple acknowledged between them, more as the edge ran on.
            at = since + (newest[-1] - since) * random.random()
            later = WindowAggregate.objects.acked_since(at).order_by("acked_at")
            ids = list(later.values_list("id", flat=True)[:SPREAD])
            some = acked.filter(id=random.choice(ids)).first() if ids else None
        chosen = [*self.asked, self.anchor, self.newest, some]
        self.asked = tuple(dict.fromkeys(probe for probe in chosen if probe is not None))[:wire.MAX_PROBES]
        return self.asked

    def answered(self, probes, held):
        """The store's answer, `held`, to `probes`: returns those it does not hold."""
        self.asked = ()
        missing = [probe for probe, kept in zip(probes, held) if not kept]
        if self.newest in probes and self.newest not in missing:
            self.anchor = self.newest
        elif self.anchor in missing:
            self.anchor = None  # asked about again only while it is acted on (ask_again)
        return missing

    def ask_again(self, probes):
        """`probes` the store did not hold, whose loss is not acted on yet: asked about at the next beats too."""
        self.asked = tuple(probes)[:wire.MAX_PROBES]

    def forget(self):
        """Every acknowledged tuple goes again: nothing asked about so far means anything."""
        self.asked, self.anchor, self.newest = (), None, None
