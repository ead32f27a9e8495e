package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/caravan-sched/caravan/internal/fsm"
)

// serverMetrics are the server's Prometheus metrics.
type serverMetrics struct {
	applyDuration *prometheus.HistogramVec
	applyBytes    *prometheus.CounterVec
	evals         *prometheus.CounterVec
	placements    prometheus.Counter
	planBatches   prometheus.Histogram
	plansRejected prometheus.Counter
	heartbeats    prometheus.Counter
	nodesDown     prometheus.Counter
}

func newServerMetrics(s *Server) *serverMetrics {
	m := &serverMetrics{
		applyDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "caravan_raft_apply_seconds", Help: "Time to commit and apply a Raft entry, by command.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"command"}),
		applyBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "caravan_raft_apply_bytes_total", Help: "Bytes of Raft entries applied, by command.",
		}, []string{"command"}),
		evals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "caravan_evaluations_processed_total", Help: "Evaluations processed by scheduler workers, by outcome.",
		}, []string{"outcome"}),
		placements: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "caravan_placements_total", Help: "Allocations placed by committed plans.",
		}),
		planBatches: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "caravan_plan_batch_size", Help: "Plans committed per Raft entry by the plan applier.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		plansRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "caravan_plan_node_rejections_total", Help: "Node placements the plan applier refused because they no longer fit.",
		}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "caravan_heartbeats_total", Help: "Node heartbeats received by this server.",
		}),
		nodesDown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "caravan_nodes_marked_down_total", Help: "Nodes marked down after missing their heartbeat TTL.",
		}),
	}
	brokerGauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	s.metrics.MustRegister(
		m.applyDuration, m.applyBytes, m.evals, m.placements, m.planBatches, m.plansRejected, m.heartbeats, m.nodesDown,
		brokerGauge("caravan_broker_ready", "Evaluations ready for a worker.", func() float64 { return float64(s.evalBroker.Stats().Ready) }),
		brokerGauge("caravan_broker_unacked", "Evaluations delivered and not yet acknowledged.", func() float64 { return float64(s.evalBroker.Stats().Unacked) }),
		brokerGauge("caravan_evaluations_blocked", "Evaluations blocked waiting for capacity.", func() float64 { return float64(s.blocked.Stats().Blocked) }),
		brokerGauge("caravan_plan_queue_depth", "Plans waiting for the plan applier.", func() float64 { return float64(s.planQueue.Stats().Depth) }),
		brokerGauge("caravan_is_leader", "1 when this server is the Raft leader.", func() float64 {
			if s.raft != nil && s.IsLeader() {
				return 1
			}
			return 0
		}),
		brokerGauge("caravan_state_index", "The newest Raft index applied to the state store.", func() float64 { return float64(s.store.LatestIndex()) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func (m *serverMetrics) observeApply(t fsm.MessageType, d time.Duration, n int) {
	name := t.String()
	m.applyDuration.WithLabelValues(name).Observe(d.Seconds())
	m.applyBytes.WithLabelValues(name).Add(float64(n))
}
