// Package events carries the state store's changes to whoever watches them:
// the /v1/event/stream endpoint, the web UI, tests. The store publishes the
// events of every committed write to a Broker; subscribers read them from a
// given Raft index, filtered by topic and key.
//
// The broker never blocks its publisher (the Raft FSM). It keeps a bounded
// ring of recent events for subscribers that reconnect, and gives each
// subscriber a bounded queue: one that falls too far behind is cut off with
// an error and reconnects from the last index it saw.
package events

// Topic is the kind of object an event is about.
type Topic string

// Topics.
const (
	TopicJob        Topic = "Job"
	TopicAllocation Topic = "Allocation"
	TopicEvaluation Topic = "Evaluation"
	TopicNode       Topic = "Node"
	// TopicAll matches every topic in a subscription's filter.
	TopicAll Topic = "*"
)

// Event types.
const (
	// JobRegistered: a job was created or got a new version (a spec change,
	// a restart, or a stopped job started again).
	JobRegistered = "JobRegistered"
	// JobUpdated: a job's server-managed fields changed (its status).
	JobUpdated = "JobUpdated"
	// JobStopped: a user stopped the job.
	JobStopped = "JobStopped"
	// JobDeregistered: the job was purged from state.
	JobDeregistered = "JobDeregistered"

	AllocationCreated = "AllocationCreated"
	AllocationUpdated = "AllocationUpdated"
	AllocationDeleted = "AllocationDeleted"

	EvaluationUpdated = "EvaluationUpdated"
	EvaluationDeleted = "EvaluationDeleted"

	NodeRegistered   = "NodeRegistered"
	NodeUpdated      = "NodeUpdated"
	NodeDeregistered = "NodeDeregistered"
)

// Event is one change of one object, committed at Index.
type Event struct {
	Topic Topic  `json:"topic"`
	Type  string `json:"type"`
	// Key is the object's id.
	Key string `json:"key"`
	// FilterKeys are further keys a subscriber may filter on: an
	// allocation's job and node, an evaluation's job.
	FilterKeys []string `json:"filter_keys,omitempty"`
	// Index is the Raft index of the write.
	Index uint64 `json:"index"`
	// Payload is the object after the change, or the deleted object. It is
	// shared with the state store and every subscriber: never modify it.
	Payload any `json:"payload"`
}

// Filter selects events by topic and key. A nil or empty filter matches
// every event.
type Filter map[Topic][]string

// Match reports whether the filter selects e: its topic (or TopicAll) is
// listed, and either no keys are listed for it or one of them is the event's
// Key or one of its FilterKeys.
func (f Filter) Match(e *Event) bool {
	if len(f) == 0 {
		return true
	}
	if keys, ok := f[e.Topic]; ok && matchKeys(keys, e) {
		return true
	}
	if keys, ok := f[TopicAll]; ok && matchKeys(keys, e) {
		return true
	}
	return false
}

func matchKeys(keys []string, e *Event) bool {
	if len(keys) == 0 {
		return true
	}
	for _, k := range keys {
		if k == "*" || k == e.Key {
			return true
		}
		for _, fk := range e.FilterKeys {
			if k == fk {
				return true
			}
		}
	}
	return false
}
