// Package telemetry holds what epochlog tells an operator about itself: a
// Prometheus collector (Metrics) that the library's packages record into,
// and the convention for structured logs (a *slog.Logger, nil = silent).
//
// A service creates one Metrics, registers it with its own registry and
// hands it to eventlog.Config.Metrics; engine and replay record into the
// Metrics and log to the Logger of the eventlog.Log they are given, so
// both are configured in one place:
//
//	m := telemetry.NewMetrics()
//	prometheus.MustRegister(m)
//	cfg := eventlog.DefaultConfig(dir)
//	cfg.Metrics, cfg.Logger = m, slog.Default()
//
// Every method of a nil *Metrics does nothing, so code records
// unconditionally. Labels are bounded: event kinds come from the
// catalogue, reasons (and a lease's how) from fixed lists; only the projector's gauges carry
// an installation label (one series per followed read model).
//
// docs/observability.md lists every series and every log record, and
// docs/grafana/epochlog.json is a dashboard of them.
//
// Nothing recorded here or logged by the library carries a secret: no key,
// no message content, no seed. Installation ids and event kinds are not
// secret (they are in the read model's file name and the stream's subjects'
// pseudonyms are not emitted).
package telemetry

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Namespace is the first part of every metric name.
const Namespace = "epochlog"

// Retry reasons, the values of the reason label of
// epochlog_append_retries_total.
const (
	// RetryLostAnswer: the server's answer to an append was lost (timeout,
	// disconnect); the same events were sent again (idempotent).
	RetryLostAnswer = "lost_answer"
	// RetryNoLeader: the stream had no leader for a moment (failover).
	RetryNoLeader = "no_leader"
	// RetryConflict: another writer appended first; the operation caught up
	// and decided again.
	RetryConflict = "conflict"
	// RetryInFlight: a replicated stream refused the append at the
	// expected position while the aggregate's previous event was still
	// being replicated; the same events were sent again after a pause.
	RetryInFlight = "in_flight"
)

// RetryReasons lists every value of the reason label.
var RetryReasons = []string{RetryLostAnswer, RetryNoLeader, RetryConflict, RetryInFlight}

// How a lease was acquired, the values of the how label of
// epochlog_lease_acquisitions_total (package lease).
const (
	// LeaseFree: nobody held the installation (never leased, or released
	// by its last holder).
	LeaseFree = "free"
	// LeaseTakeover: the last holder let the lease expire (it died, hung
	// or lost the bus) and this process took the installation over.
	LeaseTakeover = "takeover"
)

// Why a lease was lost, the values of the reason label of
// epochlog_lease_losses_total.
const (
	// LeaseExpired: the holder could not renew the lease in time and
	// stopped using it.
	LeaseExpired = "expired"
	// LeaseTaken: the lease had moved on when the holder renewed it
	// (another holder has it, or an operator deleted it).
	LeaseTaken = "taken"
)

// LeaseAcquisitions and LeaseLossReasons list every value of those labels.
var (
	LeaseAcquisitions = []string{LeaseFree, LeaseTakeover}
	LeaseLossReasons  = []string{LeaseExpired, LeaseTaken}
)

// Metrics is the library's Prometheus collector. Create it with NewMetrics
// and register it (it implements prometheus.Collector). A nil *Metrics is
// valid and records nothing.
type Metrics struct {
	appended      *prometheus.CounterVec
	applied       *prometheus.CounterVec
	applyErrors   *prometheus.CounterVec
	appendSeconds prometheus.Histogram
	conflicts     prometheus.Counter
	retries       *prometheus.CounterVec
	reconnects    prometheus.Counter
	disconnects   prometheus.Counter
	leaderChanges prometheus.Counter
	connected     prometheus.Gauge
	openReadModel prometheus.Gauge
	lagEvents     *prometheus.GaugeVec
	lagSeconds    *prometheus.GaugeVec
	checkpoint    *prometheus.GaugeVec
	leasesHeld    prometheus.Gauge
	leaseAcquired *prometheus.CounterVec
	leaseLost     *prometheus.CounterVec
	shareMembers  prometheus.Gauge
	shareUnheld   prometheus.Gauge

	all []prometheus.Collector
}

// NewMetrics returns a Metrics with every series at zero.
func NewMetrics() *Metrics {
	m := &Metrics{
		appended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "events_appended_total",
			Help: "Events appended to the log (acknowledged by the server), by event kind.",
		}, []string{"kind"}),
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "events_applied_total",
			Help: "Events applied to read models (committed), by event kind.",
		}, []string{"kind"}),
		applyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "apply_errors_total",
			Help: "Events a read model could not apply (the projection stopped there), by event kind (\"unknown\" when the event could not be opened).",
		}, []string{"kind"}),
		appendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "append_duration_seconds",
			Help:    "Time from sending an append (one atomic batch) to the server's acknowledgement, including retries.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "append_conflicts_total",
			Help: "Appends refused because the aggregate had moved on (another writer was first).",
		}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "append_retries_total",
			Help: "Appends tried again, by reason: lost_answer (the acknowledgement was lost), no_leader (stream failover), conflict (decided again after another writer), in_flight (refused while a replicated stream settled).",
		}, []string{"reason"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "nats_reconnects_total",
			Help: "Reconnections of the NATS client connection.",
		}),
		disconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "nats_disconnects_total",
			Help: "Losses of the NATS client connection.",
		}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "stream_leader_changes_total",
			Help: "Leader elections of the log's stream seen by this process.",
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "nats_connected",
			Help: "1 while the NATS client connection is up, else 0.",
		}),
		openReadModel: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "read_models_open",
			Help: "Read models (SQLCipher files) this process holds open.",
		}),
		lagEvents: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "projector_lag_events",
			Help: "Events of the installation on the stream that its read model has not applied yet.",
		}, []string{"installation"}),
		lagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "projector_lag_seconds",
			Help: "Age of the oldest event of the installation its read model has not applied yet (0 when caught up).",
		}, []string{"installation"}),
		checkpoint: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "projector_checkpoint",
			Help: "Stream sequence of the last event applied to the installation's read model.",
		}, []string{"installation"}),
		leasesHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "leases_held",
			Help: "Installation leases this process holds (package lease: it alone may write those read models).",
		}),
		leaseAcquired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "lease_acquisitions_total",
			Help: "Installation leases acquired, by how: free (nobody held it) or takeover (its last holder let it expire).",
		}, []string{"how"}),
		leaseLost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "lease_losses_total",
			Help: "Installation leases lost while held, by reason: expired (not renewed in time) or taken (another holder has it).",
		}, []string{"reason"}),
		shareMembers: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "share_members",
			Help: "Live members of the share group this process belongs to, itself included, as it last saw them.",
		}),
		shareUnheld: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "share_unheld",
			Help: "Installations this process knows that no member of its share group held at its last pass, though one could have taken each over: followed by nobody (every member at its bound, or serving them fails). Alert on it above 0.",
		}),
	}
	m.all = []prometheus.Collector{m.appended, m.applied, m.applyErrors, m.appendSeconds, m.conflicts,
		m.retries, m.reconnects, m.disconnects, m.leaderChanges, m.connected, m.openReadModel,
		m.lagEvents, m.lagSeconds, m.checkpoint, m.leasesHeld, m.leaseAcquired, m.leaseLost, m.shareMembers, m.shareUnheld}
	return m
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.all {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.all {
		c.Collect(ch)
	}
}

// Appended counts n events of kind acknowledged by the server.
func (m *Metrics) Appended(kind string, n int) {
	if m != nil && n > 0 {
		m.appended.WithLabelValues(kind).Add(float64(n))
	}
}

// AppendTook observes one append's latency (send to acknowledgement).
func (m *Metrics) AppendTook(d time.Duration) {
	if m != nil {
		m.appendSeconds.Observe(d.Seconds())
	}
}

// Conflict counts an append refused at its expected position.
func (m *Metrics) Conflict() {
	if m != nil {
		m.conflicts.Inc()
	}
}

// Retry counts an append tried again for reason (RetryLostAnswer,
// RetryNoLeader, RetryConflict).
func (m *Metrics) Retry(reason string) {
	if m != nil {
		m.retries.WithLabelValues(reason).Inc()
	}
}

// Applied counts n events of kind applied to a read model.
func (m *Metrics) Applied(kind string, n int) {
	if m != nil && n > 0 {
		m.applied.WithLabelValues(kind).Add(float64(n))
	}
}

// ApplyError counts an event of kind that a read model could not apply.
func (m *Metrics) ApplyError(kind string) {
	if m != nil {
		m.applyErrors.WithLabelValues(kind).Inc()
	}
}

// Connected records the NATS connection going up (true) or down (false);
// a reconnect counts as up after down.
func (m *Metrics) Connected(up bool) {
	if m == nil {
		return
	}
	if up {
		m.connected.Set(1)
	} else {
		m.connected.Set(0)
	}
}

// Reconnected counts a reconnection and records the connection up.
func (m *Metrics) Reconnected() {
	if m != nil {
		m.reconnects.Inc()
		m.connected.Set(1)
	}
}

// Disconnected counts a lost connection and records it down.
func (m *Metrics) Disconnected() {
	if m != nil {
		m.disconnects.Inc()
		m.connected.Set(0)
	}
}

// LeaderChanged counts a leader election of the log's stream.
func (m *Metrics) LeaderChanged() {
	if m != nil {
		m.leaderChanges.Inc()
	}
}

// ReadModelOpened and ReadModelClosed keep the count of open read models.
func (m *Metrics) ReadModelOpened() {
	if m != nil {
		m.openReadModel.Inc()
	}
}

// ReadModelClosed: see ReadModelOpened.
func (m *Metrics) ReadModelClosed() {
	if m != nil {
		m.openReadModel.Dec()
	}
}

// ProjectorAt records where installation's read model stands: the stream
// sequence of its checkpoint, the installation's events it has not applied
// yet, and the age of the oldest of those (0 when caught up).
func (m *Metrics) ProjectorAt(installation string, checkpoint uint64, lagEvents uint64, lag time.Duration) {
	if m == nil {
		return
	}
	m.checkpoint.WithLabelValues(installation).Set(float64(checkpoint))
	m.lagEvents.WithLabelValues(installation).Set(float64(lagEvents))
	m.lagSeconds.WithLabelValues(installation).Set(lag.Seconds())
}

// ProjectorGone drops installation's projector series (it is no longer
// followed by this process).
func (m *Metrics) ProjectorGone(installation string) {
	if m == nil {
		return
	}
	m.checkpoint.DeleteLabelValues(installation)
	m.lagEvents.DeleteLabelValues(installation)
	m.lagSeconds.DeleteLabelValues(installation)
}

// LeaseAcquired counts an installation lease acquired (how: LeaseFree or
// LeaseTakeover) and adds it to the leases held.
func (m *Metrics) LeaseAcquired(how string) {
	if m != nil {
		m.leaseAcquired.WithLabelValues(how).Inc()
		m.leasesHeld.Inc()
	}
}

// LeaseLost counts an installation lease lost while held (reason:
// LeaseExpired or LeaseTaken) and removes it from the leases held.
func (m *Metrics) LeaseLost(reason string) {
	if m != nil {
		m.leaseLost.WithLabelValues(reason).Inc()
		m.leasesHeld.Dec()
	}
}

// LeaseReleased removes an installation lease given up by its holder from
// the leases held.
func (m *Metrics) LeaseReleased() {
	if m != nil {
		m.leasesHeld.Dec()
	}
}

// ShareMembers records the live members of this process's share group.
func (m *Metrics) ShareMembers(n int) {
	if m != nil {
		m.shareMembers.Set(float64(n))
	}
}

// ShareUnheld records the installations this process knows that no
// member of its share group holds (lease.Member.Unheld).
func (m *Metrics) ShareUnheld(n int) {
	if m != nil {
		m.shareUnheld.Set(float64(n))
	}
}

// Logger returns l, or a logger that discards everything when l is nil:
// the library's convention is that a nil *slog.Logger means silent.
func Logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
