package eventlog

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/events"
)

// The installation chain: every event Append seals links (events.Link) to
// the latest earlier event of its installation that this Log knows, so an
// event that goes missing from the stream (a corrupted block the server
// drops, a message deleted by the bus operator) is detected by the first
// reader that meets a link to it. The Log learns an installation's head
// from its own appends and from every record it reads; when it knows none
// it asks the stream once (the last message on the installation's
// subjects). A stale head is harmless: a link may point to any earlier
// event, it only has to be there.

// headOf returns the link to inst's latest event as far as this Log knows,
// asking the stream when it knows nothing (zero: the installation has no
// events yet).
func (l *Log) headOf(ctx context.Context, inst events.InstallationID) (events.Link, error) {
	l.mu.Lock()
	h, ok := l.heads[inst]
	fl := l.floors[inst]
	floor := fl.seq
	if ok && (h.link.Seq < floor || (floor > 0 && !fl.checked)) {
		// A reader has applied more than this Log saw, or the floor is
		// not checked yet (a head learned before it was set may itself
		// link over a hole): ask the stream.
		ok = false
	}
	if ok && h.env != nil {
		// The link of an appended event is hashed when first asked for:
		// a bulk append completes far more events than it links to.
		h = head{link: events.LinkTo(h.link.Seq, h.env)}
		l.heads[inst] = h
	}
	l.mu.Unlock()
	if ok {
		return h.link, nil
	}
	filter, err := l.InstallationFilter(inst)
	if err != nil {
		return events.Link{}, err
	}
	m, err := l.getLastMsg(ctx, filter)
	var last uint64
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return events.Link{}, fmt.Errorf("eventlog: stream %s: last event of %s: %w", l.cfg.Stream, inst, err)
	default:
		last = m.Sequence
	}
	switch {
	case floor == 0:
	case last < floor:
		if err := l.belowFloor(ctx, inst, floor, last); err != nil {
			return events.Link{}, err
		}
	case last > floor:
		// Another writer (a delivery service) may have appended after a
		// hole: the event the reader applied last must still be there.
		if err := l.StillHolds(ctx, inst, floor); err != nil {
			return events.Link{}, fmt.Errorf("eventlog: installation %s: its read model has applied its events through stream seq %d, which the stream no longer holds as its event (%w); appending now would link over what is gone (verify the read model against the stream: replayer verify)%s",
				inst, floor, err, l.resealHint())
		}
	}
	if floor > 0 {
		l.mu.Lock()
		if f, ok := l.floors[inst]; ok && f.seq == floor {
			f.checked = true
			l.floors[inst] = f
		}
		l.mu.Unlock()
	}
	if last == 0 {
		return events.Link{}, nil
	}
	link := events.LinkTo(m.Sequence, m.Data)
	l.noteHead(inst, link)
	return link, nil
}

// ExpectThrough tells the Log that a reader of inst, its read model, has
// applied inst's events through stream sequence seq, so the stream still
// holds inst's event at seq. The first append for inst after the first
// such call checks it, where it asks the stream for the installation's
// head (one more message get only when the stream's last event of inst
// is past seq): when the stream's last event of inst is before seq, or
// the event at seq is gone although another writer appended after it (a
// delivery service), events the reader holds are gone (deleted, or lost
// with a damaged block), and the append fails with ErrMissingEvent
// instead of linking over them, which would leave a history that no
// longer shows the loss. engine.OpenInstallation calls it with its read
// model's checkpoint.
func (l *Log) ExpectThrough(inst events.InstallationID, seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, known := l.floors[inst]
	if f.seq >= seq {
		return
	}
	if !known && len(l.floors) >= cacheMax {
		clear(l.floors)
	}
	// The first floor of an installation is checked at its next append;
	// a later one only follows what this process read or appended.
	l.floors[inst] = readerFloor{seq: seq, checked: known && f.checked}
}

// StillHolds confirms that the stream still holds inst's event at stream
// sequence seq, the last one a reader (a read model) applied, or that a
// snapshot carries inst's history through it (compaction). A reader
// resuming after seq, or a writer linking to what follows, would
// otherwise take what comes next as the rest of the history: the event
// may be gone (deleted, lost with a damaged block, the stream restored
// from an older backup and written since) while another writer appended
// past it, so the stream's last event being past seq proves nothing.
// The error wraps ErrMissingEvent. 0 holds trivially.
func (l *Log) StillHolds(ctx context.Context, inst events.InstallationID, seq uint64) error {
	if seq == 0 {
		return nil
	}
	_, err := l.ChainLink(ctx, inst, seq)
	if err == nil || !errors.Is(err, ErrMissingEvent) {
		return err
	}
	if carried, cerr := l.CompactedThrough(ctx, inst); cerr == nil && carried >= seq {
		return nil
	}
	return err
}

// readerFloor is what ExpectThrough was told of an installation: the
// sequence its reader applied its events through, and whether headOf has
// checked the stream against it.
type readerFloor struct {
	seq     uint64
	checked bool
}

// belowFloor decides a stream whose last event of inst (last; 0: none) is
// before the floor a reader set: events missing, unless a snapshot
// carries inst's history through the floor (a compacted installation
// may have no event left on the stream), or inst was erased (its
// tombstone: ErrErased, as every append of an erased installation is).
func (l *Log) belowFloor(ctx context.Context, inst events.InstallationID, floor, last uint64) error {
	if err := l.CheckNotErased(ctx, inst); err != nil {
		return err
	}
	carried, err := l.CompactedThrough(ctx, inst)
	if err != nil {
		return err
	}
	if carried >= floor {
		return nil
	}
	at := "has none"
	if last > 0 {
		at = fmt.Sprintf("is at stream seq %d", last)
	}
	return fmt.Errorf("eventlog: installation %s: its read model has applied its events through stream seq %d, but the stream's last event of it %s: %w; appending now would link over the events that are gone (verify the read model against the stream: replayer verify)%s",
		inst, floor, at, ErrMissingEvent, l.resealHint())
}

// resealHint is what a missing-event error adds on a re-sealed stream: a
// read model built from the source before the switch holds the source's
// sequences, which are not this stream's, so its checkpoint points at
// some other event here or none, and the cure is a rebuild, not a repair.
func (l *Log) resealHint() string {
	src := l.ResealedFrom()
	if src == "" {
		return ""
	}
	return fmt.Sprintf("; stream %s was re-sealed from %s, whose sequences differ: a read model built from %s before the switch must be rebuilt from %s first (replayer rebuild --stream %s)",
		l.cfg.Stream, src, src, l.cfg.Stream, l.cfg.Stream)
}

// head is an installation's latest known event: its link, or while env
// is set only its sequence (link.Seq) and envelope, to be hashed into the
// link when asked for.
type head struct {
	link events.Link
	env  []byte
}

// noteHead records h as inst's head if it is newer than the one known.
func (l *Log) noteHead(inst events.InstallationID, h events.Link) {
	l.setHead(inst, head{link: h})
}

func (l *Log) setHead(inst events.InstallationID, h head) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur, ok := l.heads[inst]; ok && cur.link.Seq >= h.link.Seq {
		return
	}
	if len(l.heads) >= cacheMax {
		clear(l.heads)
	}
	l.heads[inst] = h
}

// noteAppended records the head after a successful append of p: the last
// event, if this append stored it (a duplicate's stored envelope is an
// earlier attempt's, whose digest this Log does not have).
func (l *Log) noteAppended(p *prepared, res []Appended) {
	if n := len(res); n > 0 && n == len(p.envs) && !res[n-1].Duplicate {
		seq, env := res[n-1].Seq, p.envs[n-1]
		if len(env) > lazyHeadMax {
			l.setHead(p.agg.Installation, head{link: events.LinkTo(seq, env)})
			return
		}
		l.setHead(p.agg.Installation, head{link: events.Link{Seq: seq}, env: env})
	}
}

// lazyHeadMax is the largest envelope whose link is hashed only when
// asked for: larger ones (group states) are hashed at once rather than
// kept, one per installation, until then.
const lazyHeadMax = 4 << 10

// linkWindow is the most recent events a read remembers to check links
// against; a link to an older event is checked with a message get.
var linkWindow = 1 << 16 // a variable for tests

// linkWindowPerInstallation caps the window of a read of few
// installations: an event links to its installation's previous event,
// rarely further back than a few of them (concurrent writers), while a
// full window costs about 4 MB, which a follower holding one read per
// read model would pay for each of hundreds.
const linkWindowPerInstallation = 1 << 12

// linkChecker checks the links of the records one read delivers: each link
// at or after the read's first sequence must name an event the read
// delivered (same sequence, same envelope digest). A link before the first
// sequence cannot be checked by this read, as with positions.
type linkChecker struct {
	l      *Log
	from   uint64
	seen   map[uint64][events.LinkDigestSize]byte
	ring   []uint64 // the sequences in seen, oldest evicted first
	next   int
	oldest uint64 // the oldest sequence still in seen
	window int    // how many events seen holds at most
}

// newLinkChecker returns the link checker of a read of insts
// installations from stream sequence from.
func newLinkChecker(l *Log, from uint64, insts int) *linkChecker {
	return &linkChecker{l: l, from: max(from, 1), seen: map[uint64][events.LinkDigestSize]byte{},
		window: min(linkWindow, linkWindowPerInstallation*max(insts, 1))}
}

// check verifies ev's link, then remembers the record (seq, envelope) for
// later links.
func (c *linkChecker) check(ctx context.Context, inst events.InstallationID, seq uint64, ev events.Event, envelope []byte) error {
	if p := ev.Prev; !p.IsZero() && p.Seq >= c.from {
		if err := c.verify(ctx, inst, seq, p); err != nil {
			return err
		}
	}
	self := events.LinkTo(seq, envelope)
	c.remember(self)
	c.l.noteHead(inst, self)
	return nil
}

func (c *linkChecker) verify(ctx context.Context, inst events.InstallationID, seq uint64, p events.Link) error {
	if p.Seq >= seq {
		return fmt.Errorf("%w: the event links to stream sequence %d, not before its own %d", ErrMissingEvent, p.Seq, seq)
	}
	if d, ok := c.seen[p.Seq]; ok {
		if d != p.Digest {
			return fmt.Errorf("%w: the event links to stream sequence %d, which holds another event than the one its writer saw (the stream was altered or truncated and written again)", ErrMissingEvent, p.Seq)
		}
		return nil
	}
	if len(c.ring) < c.window || p.Seq >= c.oldest {
		return fmt.Errorf("%w: the event links to stream sequence %d, an event of installation %s the stream does not give", ErrMissingEvent, p.Seq, inst)
	}
	// Older than the window: look it up.
	m, err := c.l.getMsg(ctx, p.Seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("%w: the event links to stream sequence %d, which the stream no longer holds", ErrMissingEvent, p.Seq)
	}
	if err != nil {
		return fmt.Errorf("eventlog: stream %s: get seq %d to check a link: %w", c.l.cfg.Stream, p.Seq, err)
	}
	if events.LinkTo(m.Sequence, m.Data) != p {
		return fmt.Errorf("%w: the event links to stream sequence %d, which holds another event than the one its writer saw", ErrMissingEvent, p.Seq)
	}
	return nil
}

func (c *linkChecker) remember(self events.Link) {
	if len(c.ring) < c.window {
		c.ring = append(c.ring, self.Seq)
	} else {
		delete(c.seen, c.ring[c.next])
		c.ring[c.next] = self.Seq
		c.next = (c.next + 1) % c.window
		c.oldest = c.ring[c.next]
	}
	if len(c.ring) == 1 {
		c.oldest = self.Seq
	}
	c.seen[self.Seq] = self.Digest
}
