package telemetry

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
)

// touched is a Metrics with a series of every vector, so that gathering
// it shows every metric the library exports.
func touched() *Metrics {
	m := NewMetrics()
	m.Appended("group.created", 1)
	m.AppendTook(time.Millisecond)
	m.Conflict()
	for _, r := range RetryReasons {
		m.Retry(r)
	}
	m.Applied("group.created", 2)
	m.ApplyError("unknown")
	m.Connected(true)
	m.Disconnected()
	m.Reconnected()
	m.LeaderChanged()
	m.ReadModelOpened()
	m.ProjectorAt("inst-a", 7, 3, 2*time.Second)
	for _, how := range LeaseAcquisitions {
		m.LeaseAcquired(how)
	}
	for _, r := range LeaseLossReasons {
		m.LeaseLost(r)
	}
	m.ShareMembers(3)
	m.ShareUnheld(2)
	return m
}

// exported returns the metric families a registry with m gives, by name.
func exported(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

// seriesNames are the names a query may use for family f: a histogram's
// _bucket, _sum and _count, else its own.
func seriesNames(f *dto.MetricFamily) []string {
	if f.GetType() == dto.MetricType_HISTOGRAM {
		n := f.GetName()
		return []string{n + "_bucket", n + "_sum", n + "_count"}
	}
	return []string{f.GetName()}
}

func TestMetricsExported(t *testing.T) {
	fams := exported(t, touched())
	want := map[string]dto.MetricType{
		"epochlog_events_appended_total":       dto.MetricType_COUNTER,
		"epochlog_events_applied_total":        dto.MetricType_COUNTER,
		"epochlog_apply_errors_total":          dto.MetricType_COUNTER,
		"epochlog_append_duration_seconds":     dto.MetricType_HISTOGRAM,
		"epochlog_append_conflicts_total":      dto.MetricType_COUNTER,
		"epochlog_append_retries_total":        dto.MetricType_COUNTER,
		"epochlog_nats_reconnects_total":       dto.MetricType_COUNTER,
		"epochlog_nats_disconnects_total":      dto.MetricType_COUNTER,
		"epochlog_stream_leader_changes_total": dto.MetricType_COUNTER,
		"epochlog_nats_connected":              dto.MetricType_GAUGE,
		"epochlog_read_models_open":            dto.MetricType_GAUGE,
		"epochlog_projector_lag_events":        dto.MetricType_GAUGE,
		"epochlog_projector_lag_seconds":       dto.MetricType_GAUGE,
		"epochlog_projector_checkpoint":        dto.MetricType_GAUGE,
		"epochlog_leases_held":                 dto.MetricType_GAUGE,
		"epochlog_lease_acquisitions_total":    dto.MetricType_COUNTER,
		"epochlog_lease_losses_total":          dto.MetricType_COUNTER,
		"epochlog_share_members":               dto.MetricType_GAUGE,
		"epochlog_share_unheld":                dto.MetricType_GAUGE,
	}
	for name, typ := range want {
		f, ok := fams[name]
		if !ok {
			t.Errorf("%s not exported", name)
			continue
		}
		if f.GetType() != typ {
			t.Errorf("%s is a %v, want %v", name, f.GetType(), typ)
		}
		if f.GetHelp() == "" {
			t.Errorf("%s has no help", name)
		}
	}
	for name := range fams {
		if _, ok := want[name]; !ok {
			t.Errorf("%s exported but not known to this test (and docs/observability.md?)", name)
		}
	}
	var list []*dto.MetricFamily
	for _, f := range fams {
		list = append(list, f)
	}
	problems, err := promlint.NewWithMetricFamilies(list).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	if got := len(fams["epochlog_append_retries_total"].GetMetric()); got != len(RetryReasons) {
		t.Errorf("%d retry series, want one per reason (%d)", got, len(RetryReasons))
	}
}

// A nil *Metrics records nothing and does not panic; ProjectorGone drops
// an installation's series.
func TestMetricsNilAndGone(t *testing.T) {
	var m *Metrics
	m.Appended("k", 1)
	m.AppendTook(time.Second)
	m.Conflict()
	m.Retry(RetryConflict)
	m.Applied("k", 1)
	m.ApplyError("k")
	m.Connected(true)
	m.Reconnected()
	m.Disconnected()
	m.LeaderChanged()
	m.ReadModelOpened()
	m.ReadModelClosed()
	m.ProjectorAt("i", 1, 1, time.Second)
	m.ProjectorGone("i")
	m.LeaseAcquired(LeaseFree)
	m.LeaseLost(LeaseExpired)
	m.LeaseReleased()
	m.ShareMembers(1)
	m.ShareUnheld(1)
	if Logger(nil) == nil {
		t.Fatal("Logger(nil) is nil")
	}
	Logger(nil).Error("discarded")

	m = touched()
	m.ProjectorGone("inst-a")
	fams := exported(t, m)
	for _, name := range []string{"epochlog_projector_lag_events", "epochlog_projector_lag_seconds", "epochlog_projector_checkpoint"} {
		if n := len(fams[name].GetMetric()); n != 0 {
			t.Errorf("%s: %d series after ProjectorGone", name, n)
		}
	}
}

// dashboard is what the test reads of a Grafana dashboard.
type dashboard struct {
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Definition string          `json:"definition"`
			Query      json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Type    string  `json:"type"`
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"` // a collapsed row's
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

var metricName = regexp.MustCompile(`\b` + Namespace + `_[a-zA-Z0-9_]+`)

// docs/grafana/epochlog.json queries only metrics the library exports, and
// every exported metric shows in some panel.
func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile("../docs/grafana/epochlog.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("docs/grafana/epochlog.json: %v", err)
	}
	fams := exported(t, touched())
	valid := map[string]string{} // series name -> family
	for name, f := range fams {
		for _, s := range seriesNames(f) {
			valid[s] = name
		}
	}
	shown := map[string][]string{} // family -> panel titles
	check := func(where, expr string) {
		names := metricName.FindAllString(expr, -1)
		if len(names) == 0 {
			t.Errorf("%s: query %q uses no epochlog metric", where, expr)
		}
		for _, n := range names {
			fam, ok := valid[n]
			if !ok {
				t.Errorf("%s: query %q uses %s, which the library does not export", where, expr, n)
				continue
			}
			shown[fam] = append(shown[fam], where)
		}
	}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if p.Title == "" {
				t.Errorf("a %s panel without a title", p.Type)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				check("panel "+p.Title, tg.Expr)
			}
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Definition != "" {
			check("variable "+v.Name, v.Definition)
		}
	}
	var missing []string
	for name := range fams {
		if !slices.ContainsFunc(shown[name], func(w string) bool { return strings.HasPrefix(w, "panel ") }) {
			missing = append(missing, name)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("exported metrics no panel shows: %v", missing)
	}
	// The histogram's quantiles, not only its mean.
	for _, q := range []string{"histogram_quantile(0.5,", "histogram_quantile(0.99,"} {
		if !strings.Contains(string(raw), q) {
			t.Errorf("dashboard has no %s ...) of the append latency", q)
		}
	}
}

// The leases held go up with each acquisition and down with each loss or
// release; acquisitions and losses are counted by their label.
func TestLeaseSeries(t *testing.T) {
	m := NewMetrics()
	m.LeaseAcquired(LeaseFree)
	m.LeaseAcquired(LeaseTakeover)
	m.LeaseAcquired(LeaseFree)
	m.LeaseLost(LeaseTaken)
	m.LeaseReleased()
	fams := exported(t, m)
	if v := fams["epochlog_leases_held"].GetMetric()[0].GetGauge().GetValue(); v != 1 {
		t.Errorf("leases held %v, want 1", v)
	}
	got := map[string]float64{}
	for _, s := range fams["epochlog_lease_acquisitions_total"].GetMetric() {
		got[s.GetLabel()[0].GetValue()] = s.GetCounter().GetValue()
	}
	if got[LeaseFree] != 2 || got[LeaseTakeover] != 1 {
		t.Errorf("acquisitions %v, want free 2, takeover 1", got)
	}
	if n := len(fams["epochlog_lease_losses_total"].GetMetric()); n != 1 {
		t.Errorf("%d loss series, want 1 (taken)", n)
	}
}
