package engine

// The raw building blocks of the end-to-end benchmarks ("the sum of its
// parts", docs/benchmarks.md, "End to end"), measured in the same run, on
// the same server, after the timed loop:
//
//	publish:   the messages the timed loop appended (read back from the
//	           stream: same subjects, bytes and Nats-Msg-Id, with the
//	           expected last subject sequence), published raw with
//	           jetstream PublishAsync, at most 256 unacknowledged, to a
//	           stream of the same configuration on the same server;
//	seal/open: events.SealData of each of those events again under a
//	           data key of its installation and period, and
//	           events.OpenData of the result (each event opened once: by
//	           the read model it belongs to);
//	MLS:       one SealApplication (with Marshal) per message, one
//	           Unmarshal + Process per delivery, on copies of the
//	           sender's and a recipient's group states;
//	SQLCipher: the rows the loop added to the read models (messages,
//	           deliveries), inserted with prepared INSERTs, 512 rows per
//	           transaction, into copies of the read models taken before
//	           the loop (the same database the engine inserted them into,
//	           with the same indexes to maintain), one database per read
//	           model as in the engine, at least 512 rows each (copies
//	           with their keys renumbered when the loop added fewer), the
//	           time per row times the rows added; for the sender and a
//	           sample of recipients (scaled to all of them).
//
// Parts time per message = the sum of the four totals / messages; the
// benchmark reports of-parts = parts time / end-to-end time per message.

import (
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/mutecomm/go-sqlcipher/v4" // registers "sqlite3" for the raw inserts
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/projections"
)

// partsSample is how many recipients' read models the SQLCipher part
// copies (the rest are scaled from them).
const partsSample = 4

// partsMark is where the read models stood before the timed loop.
type partsMark struct {
	streamSeq uint64
	ordinal   map[events.InstallationID]uint64 // last message ordinal in the group
	queueSeq  map[events.InstallationID]uint64 // last delivery sequence on the channel
	copies    map[events.InstallationID]string // copies of the read model files
}

// partsTimes are the raw building blocks' totals over the loop's messages.
type partsTimes struct {
	publish, sealOpen, mls, sql time.Duration
	events                      int
}

func (p partsTimes) total() time.Duration { return p.publish + p.sealOpen + p.mls + p.sql }

// sampled are the read models the SQLCipher part copies: the sender's and
// up to partsSample recipients'.
func (e *e2eEnv) sampled() []events.InstallationID {
	return e.ids[:min(len(e.ids), partsSample+1)]
}

// mark records where the stream and the sampled read models stand.
func (e *e2eEnv) mark(b *testing.B) partsMark {
	b.Helper()
	m := partsMark{streamSeq: e.streamLastSeq(b), ordinal: map[events.InstallationID]uint64{},
		queueSeq: map[events.InstallationID]uint64{}, copies: map[events.InstallationID]string{}}
	dir := b.TempDir()
	for _, id := range e.sampled() {
		// Nothing writes to the read models now: their files (database
		// and WAL) copy consistently.
		m.copies[id] = filepath.Join(dir, string(id)+".db")
		for _, suffix := range []string{"", "-wal"} {
			if err := copyFile(e.be.dbPath(id)+suffix, m.copies[id]+suffix); err != nil {
				b.Fatal(err)
			}
		}
		db := e.rawDB(b, e.be.dbPath(id), id)
		var ord, seq uint64
		if err := db.QueryRow(`SELECT coalesce(max(ordinal), 0) FROM messages WHERE group_id = ?`, e.gid).Scan(&ord); err != nil {
			b.Fatal(err)
		}
		if err := db.QueryRow(`SELECT coalesce(max(seq), 0) FROM deliveries WHERE recipient = ? AND channel = ?`, string(id), mlsChannel).Scan(&seq); err != nil {
			b.Fatal(err)
		}
		m.ordinal[id], m.queueSeq[id] = ord, seq
		db.Close()
	}
	return m
}

// streamLastSeq is the stream's last sequence.
func (e *e2eEnv) streamLastSeq(b *testing.B) uint64 {
	b.Helper()
	st, err := e.js.Stream(context.Background(), e.be.log.Stream())
	if err != nil {
		b.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return info.State.LastSeq
}

// rawDSN is what projections' connector uses for a raw key (see
// projections/db.go newConnector): the same file format and settings.
func rawDSN(path string, key []byte) string {
	q := url.Values{}
	q.Set("_busy_timeout", "5000")
	q.Set("_foreign_keys", "1")
	q.Set("_txlock", "immediate")
	q.Set("_pragma_key", "x'"+hex.EncodeToString(key)+"'\"; PRAGMA cipher_compatibility = 4; --")
	q.Set("_pragma_cipher_page_size", strconv.Itoa(projections.PageSize))
	q.Set("_journal_mode", "WAL")
	q.Set("_sync", "NORMAL")
	return path + "?" + q.Encode()
}

// rawDB opens a read model file with a plain database/sql connection.
func (e *e2eEnv) rawDB(b *testing.B, path string, id events.InstallationID) *sql.DB {
	b.Helper()
	db, err := sql.Open("sqlite3", rawDSN(path, e.rawKeys[id]))
	if err != nil {
		b.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	return db
}

// measureParts measures the raw building blocks of the msgs messages the
// loop processed since m.
func (e *e2eEnv) measureParts(b *testing.B, m partsMark, msgs int) partsTimes {
	b.Helper()
	var p partsTimes
	msgsOnStream := e.streamMessages(b, m.streamSeq)
	p.events = len(msgsOnStream)
	p.publish = e.rawPublish(b, msgsOnStream)
	p.sealOpen = e.sealOpen(b, msgsOnStream)
	p.mls = e.mlsParts(b, msgs)
	p.sql = e.sqlParts(b, m)
	return p
}

// streamMessages reads the stream's messages after seq.
func (e *e2eEnv) streamMessages(b *testing.B, after uint64) []*nats.Msg {
	b.Helper()
	ctx := context.Background()
	last := e.streamLastSeq(b)
	if last <= after {
		return nil
	}
	cons, err := e.js.OrderedConsumer(ctx, e.be.log.Stream(), jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: after + 1})
	if err != nil {
		b.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		b.Fatal(err)
	}
	defer it.Stop()
	var out []*nats.Msg
	for {
		msg, err := it.Next()
		if err != nil {
			b.Fatal(err)
		}
		md, err := msg.Metadata()
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, &nats.Msg{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()})
		if md.Sequence.Stream >= last {
			return out
		}
	}
}

// rawPublish publishes msgs to a fresh stream of the same configuration
// (opened by eventlog.Open, as the engine's), with their message ids and
// expected last subject sequences, pipelined, and returns the time taken.
func (e *e2eEnv) rawPublish(b *testing.B, msgs []*nats.Msg) time.Duration {
	b.Helper()
	ctx := context.Background()
	e.rawStreams++
	cfg := e.cfg
	cfg.Stream = fmt.Sprintf("RAWPARTS%d", e.rawStreams)
	cfg.SubjectPrefix = strings.ToLower(cfg.Stream)
	l, err := eventlog.Open(ctx, cfg, e.be.ring)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		l.Close()
		_ = e.js.DeleteStream(ctx, cfg.Stream)
	}()
	js, err := jetstream.New(e.nc, jetstream.WithPublishAsyncMaxPending(eventlog.DefaultMaxInFlight))
	if err != nil {
		b.Fatal(err)
	}
	out := make([]*nats.Msg, len(msgs))
	lastOn := map[string]uint64{}
	for i, m := range msgs {
		subj := cfg.SubjectPrefix + strings.TrimPrefix(m.Subject, eventlog.DefaultSubjectPrefix)
		h := nats.Header{jetstream.MsgIDHeader: []string{m.Header.Get(jetstream.MsgIDHeader)}}
		if m.Header.Get(jetstream.ExpectedLastSubjSeqHeader) != "" {
			h[jetstream.ExpectedLastSubjSeqHeader] = []string{strconv.FormatUint(lastOn[subj], 10)}
		}
		lastOn[subj] = uint64(i + 1) // one publisher on a fresh stream
		out[i] = &nats.Msg{Subject: subj, Header: h, Data: m.Data}
	}
	start := time.Now()
	for _, m := range out {
		if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		b.Fatal("raw publishes not acknowledged")
	}
	d := time.Since(start)
	st, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		b.Fatal(err)
	}
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != uint64(len(out)) {
		b.Fatalf("raw stream holds %v messages, want %d (%v)", info.State.Msgs, len(out), err)
	}
	return d
}

// sealOpen times sealing every event again and opening it, as the path
// seals each under its period's data key (envelope format 3) and each
// read model opens it: the events are read first (untimed, through the
// Log, as the engine reads them), then sealed with events.SealData under
// a data key per installation and period (generated here: the key's
// fetch is the Log's, not the building block's) and opened with
// events.OpenData.
func (e *e2eEnv) sealOpen(b *testing.B, msgs []*nats.Msg) time.Duration {
	b.Helper()
	ctx := context.Background()
	bind := func(subject string) events.Binding {
		return events.Binding{Stream: e.be.log.Stream(), Subject: subject}
	}
	type instKey struct {
		inst events.InstallationID
		id   events.DataKeyID
	}
	keys := map[instKey]events.DataKey{}
	defer func() {
		for _, k := range keys {
			k.Wipe()
		}
	}()
	insts := make([]events.InstallationID, len(msgs))
	ids := make([]events.DataKeyID, len(msgs))
	evs := make([]events.Event, len(msgs))
	for i, m := range msgs {
		pseudo := strings.Split(m.Subject, ".")[1]
		id, ok := e.byPseudonym[pseudo]
		if !ok {
			b.Fatalf("message on %s: no such installation", m.Subject)
		}
		insts[i] = id
		ev, err := e.be.log.OpenEnvelope(ctx, id, m.Subject, m.Data)
		if err != nil {
			b.Fatal(err)
		}
		evs[i] = ev
		kid, ok, err := events.EnvelopeDataKeyID(m.Data)
		if err != nil || !ok {
			b.Fatalf("message on %s: not sealed under a data key (%v)", m.Subject, err)
		}
		ids[i] = kid
		if _, ok := keys[instKey{id, kid}]; !ok {
			k, err := events.GenerateDataKey()
			if err != nil {
				b.Fatal(err)
			}
			keys[instKey{id, kid}] = k
		}
	}
	envs := make([][]byte, len(msgs))
	start := time.Now()
	for i, m := range msgs {
		env, err := events.SealData(keys[instKey{insts[i], ids[i]}], ids[i], bind(m.Subject), evs[i])
		if err != nil {
			b.Fatal(err)
		}
		envs[i] = env
	}
	for i, m := range msgs {
		if _, err := events.OpenData(keys[instKey{insts[i], ids[i]}], insts[i], bind(m.Subject), envs[i]); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}

// mlsParts times one SealApplication per message and one Process per
// delivery, on copies of the sender's and the first recipient's states.
func (e *e2eEnv) mlsParts(b *testing.B, msgs int) time.Duration {
	b.Helper()
	send := e.groupCopy(b, e.ids[0])
	recv := e.groupCopy(b, e.ids[1])
	wires := make([][]byte, msgs)
	start := time.Now()
	for i := range wires {
		ng, m, err := send.SealApplication([]byte(fmt.Sprintf("message %d", i)), nil)
		if err != nil {
			b.Fatal(err)
		}
		if wires[i], err = m.Marshal(); err != nil {
			b.Fatal(err)
		}
		send = ng
	}
	sealT := time.Since(start)
	start = time.Now()
	for _, w := range wires {
		var m mls.MLSMessage
		if err := m.Unmarshal(w); err != nil {
			b.Fatal(err)
		}
		ng, _, err := recv.Process(&m)
		if err != nil {
			b.Fatal(err)
		}
		recv = ng
	}
	// Every recipient opens every message: scale the one measured.
	return sealT + time.Since(start)*time.Duration(len(e.ids)-1)
}

// groupCopy is the installation's current group state (a value: using it
// changes nothing in the installation).
func (e *e2eEnv) groupCopy(b *testing.B, id events.InstallationID) *mls.Group {
	b.Helper()
	in := e.be.insts[id]
	in.mu.Lock()
	defer in.mu.Unlock()
	gs, err := in.loadGroup(context.Background(), e.gid)
	if err != nil {
		b.Fatal(err)
	}
	return gs.g
}

// sqlParts copies the rows the loop added to the sampled read models into
// fresh ones with raw INSERTs and returns the time, scaled to every
// recipient.
func (e *e2eEnv) sqlParts(b *testing.B, m partsMark) time.Duration {
	b.Helper()
	var sender, recipients time.Duration
	sample := e.sampled()
	for i, id := range sample {
		d := e.rawInsert(b, id, m)
		if i == 0 {
			sender = d
		} else {
			recipients += d
		}
	}
	n := len(sample) - 1
	return sender + recipients*time.Duration(len(e.ids)-1)/time.Duration(n)
}

// tableRows are rows of one table to insert.
type tableRows struct {
	insert string
	cols   []string
	rows   [][]any
}

func selectRows(b *testing.B, db *sql.DB, table, where string, args ...any) tableRows {
	b.Helper()
	rows, err := db.Query(`SELECT * FROM `+table+` WHERE `+where, args...)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		b.Fatal(err)
	}
	t := tableRows{cols: cols, insert: `INSERT INTO ` + table + `(` + strings.Join(cols, ",") + `) VALUES (` + strings.TrimSuffix(strings.Repeat("?,", len(cols)), ",") + `)`}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			b.Fatal(err)
		}
		t.rows = append(t.rows, vals)
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	return t
}

// rawInsert returns the time raw INSERTs take for the rows the loop added
// to id's read model: they (and, when there are fewer than 512, copies of
// them with their keys renumbered) are inserted into the copy of the read
// model taken before the loop, 512 per transaction; the time per row
// times the rows added is the result, whatever the run's length.
func (e *e2eEnv) rawInsert(b *testing.B, id events.InstallationID, m partsMark) time.Duration {
	b.Helper()
	src := e.rawDB(b, e.be.dbPath(id), id)
	msgs := selectRows(b, src, "messages", "group_id = ? AND ordinal > ?", e.gid, m.ordinal[id])
	dels := selectRows(b, src, "deliveries", "recipient = ? AND channel = ? AND seq > ?", string(id), mlsChannel, m.queueSeq[id])
	src.Close()
	added := len(msgs.rows) + len(dels.rows)
	if added == 0 {
		return 0
	}
	cm, cd := tableRows{insert: msgs.insert}, tableRows{insert: dels.insert}
	for c := 0; c == 0 || len(cm.rows)+len(cd.rows) < 512; c++ {
		cm.rows = append(cm.rows, renumber(msgs, c, "ordinal", "message_id")...)
		cd.rows = append(cd.rows, renumber(dels, c, "seq", "idempotency_key")...)
	}
	dst := e.rawDB(b, m.copies[id], id)
	defer dst.Close()
	start := time.Now()
	insert(b, dst, []tableRows{cm, cd}, 512)
	d := time.Since(start)
	return d * time.Duration(added) / time.Duration(len(cm.rows)+len(cd.rows))
}

// copyFile copies src to dst (mode 0600); a missing src is no error.
func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o600)
}

// renumber returns a copy of t's rows for copy c: the integer column seq
// moved by c times a large offset, the unique column uniq (bytes or text)
// suffixed with c.
func renumber(t tableRows, c int, seq, uniq string) [][]any {
	cols := t.cols
	out := make([][]any, len(t.rows))
	for i, r := range t.rows {
		nr := append([]any(nil), r...)
		for j, name := range cols {
			switch {
			case c == 0:
			case name == seq:
				nr[j] = nr[j].(int64) + int64(c)<<32
			case name == uniq && nr[j] != nil:
				switch v := nr[j].(type) {
				case []byte: // four bytes: a run of one message needs 512 copies
					nr[j] = binary.BigEndian.AppendUint32(append([]byte(nil), v...), uint32(c))
				case string:
					nr[j] = fmt.Sprintf("%s-%d", v, c)
				}
			}
		}
		out[i] = nr
	}
	return out
}

// insert writes ts with prepared statements, batch rows per transaction,
// moving the checkpoint with each (as projections' RawInsert benchmark).
func insert(b *testing.B, db *sql.DB, ts []tableRows, batch int) {
	b.Helper()
	tx, err := db.Begin()
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	commit := func() {
		if _, err := tx.Exec(`UPDATE checkpoint SET seq = ? WHERE id = 1`, n); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	for _, t := range ts {
		st, err := tx.Prepare(t.insert)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range t.rows {
			if _, err := st.Exec(r...); err != nil {
				b.Fatal(err)
			}
			if n++; n%batch == 0 {
				st.Close()
				commit()
				if tx, err = db.Begin(); err != nil {
					b.Fatal(err)
				}
				if st, err = tx.Prepare(t.insert); err != nil {
					b.Fatal(err)
				}
			}
		}
		st.Close()
	}
	commit()
}

// reportParts reports the parts per message and of-parts for a loop of
// msgs messages that took perMsg each.
func reportParts(b *testing.B, p partsTimes, msgs int, perMsg time.Duration) {
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(msgs) }
	b.ReportMetric(per(p.publish), "publish-µs/msg")
	b.ReportMetric(per(p.sealOpen), "sealopen-µs/msg")
	b.ReportMetric(per(p.mls), "mls-µs/msg")
	b.ReportMetric(per(p.sql), "sql-µs/msg")
	b.ReportMetric(float64(p.events)/float64(msgs), "events/msg")
	b.ReportMetric(per(p.total())/float64(perMsg.Microseconds()), "of-parts")
}
