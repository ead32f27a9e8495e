package broker

import (
	"context"
	"fmt"
	"time"

	"github.com/caravan-sched/caravan"
)

// Defaults for a zero Config.
const (
	DefaultNackTimeout   = 60 * time.Second
	DefaultDeliveryLimit = 3
	DefaultNackDelay     = 1 * time.Second
	DefaultMaxNackDelay  = 20 * time.Second
)

// Config tunes an EvalBroker. Zero (or negative) fields take the defaults.
type Config struct {
	// NackTimeout is how long a delivery may stay unacked before it
	// counts as a nack and the evaluation is delivered again.
	NackTimeout time.Duration
	// DeliveryLimit is how many times an evaluation is delivered before it
	// goes to the failed list.
	DeliveryLimit int
	// NackDelay is how long a nacked evaluation waits before it is ready
	// again; the delay doubles with every further nack, up to
	// MaxNackDelay.
	NackDelay    time.Duration
	MaxNackDelay time.Duration
}

func (c Config) withDefaults() Config {
	if c.NackTimeout <= 0 {
		c.NackTimeout = DefaultNackTimeout
	}
	if c.DeliveryLimit <= 0 {
		c.DeliveryLimit = DefaultDeliveryLimit
	}
	if c.NackDelay <= 0 {
		c.NackDelay = DefaultNackDelay
	}
	if c.MaxNackDelay <= 0 {
		c.MaxNackDelay = DefaultMaxNackDelay
	}
	if c.MaxNackDelay < c.NackDelay {
		c.MaxNackDelay = c.NackDelay
	}
	return c
}

// evalState is where an evaluation is in the broker (see the package
// diagram).
type evalState int

const (
	stateGone    evalState = iota // no longer held
	stateDelayed                  // WaitUntil in the future
	statePending                  // behind another evaluation of its job
	stateReady                    // waiting for a worker
	stateUnacked                  // delivered, waiting for Ack or Nack
	stateWaiting                  // nacked, waiting for its redelivery delay
	numStates
)

// tracked is an evaluation the broker holds.
type tracked struct {
	eval *caravan.Evaluation
	// seq is the arrival order; it breaks ties in the ready order.
	seq        uint64
	state      evalState
	deliveries int
	// token is the delivery's while unacked; paused stops its nack timer.
	token  string
	paused bool
	// due is when the evaluation's timer fires, and timer its position in
	// the timer heap (-1: no timer). See timers.go.
	due   time.Time
	timer int
}

// EvalBroker hands evaluations to scheduler workers: by priority, at most one
// evaluation per job at a time, at least once. See the package comment for
// an evaluation's way through it. It is safe for concurrent use; its timers
// run in Run.
type EvalBroker struct {
	cfg Config
	gate

	evals   map[string]*tracked          // every evaluation held, by id
	ready   map[string]*heapOf[*tracked] // ready work by scheduler type
	jobs    map[string]string            // job id → id of its evaluation in flight
	pending map[string]*tracked          // job id → newest evaluation waiting behind it
	timers  *heapOf[*tracked]            // delays, redeliveries and nack deadlines
	seq     uint64                       // arrivals so far
	counts  [numStates]int               // evaluations per state
	byType  map[string]int               // ready evaluations per type
	failed  evalList                     // out of deliveries
	cancel  evalList                     // superseded by a newer one of the same job
	readyCh signal                       // new ready work, or a disable
	timerCh signal                       // the earliest timer moved earlier
}

// NewEvalBroker returns a disabled broker; the server enables it when it
// gains leadership.
func NewEvalBroker(cfg Config) *EvalBroker {
	b := &EvalBroker{cfg: cfg.withDefaults()}
	b.resetLocked()
	return b
}

// resetLocked drops everything the broker holds.
func (b *EvalBroker) resetLocked() {
	for _, t := range b.evals {
		t.state = stateGone
	}
	b.evals = map[string]*tracked{}
	b.ready = map[string]*heapOf[*tracked]{}
	b.jobs = map[string]string{}
	b.pending = map[string]*tracked{}
	if b.timers != nil {
		b.timers.Clear()
	}
	b.timers = newTimerHeap()
	b.counts = [numStates]int{}
	b.byType = map[string]int{}
	b.failed.reset()
	b.cancel.reset()
}

// SetEnabled turns the broker on (on gaining leadership) or off (on losing
// it). Turning it off drops every evaluation it holds and fails every
// waiting Dequeue, WaitFailed and WaitCancelable with ErrDisabled; Acks of
// earlier deliveries fail too. While disabled, Enqueue does nothing.
func (b *EvalBroker) SetEnabled(on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.enabled == on {
		return
	}
	b.enabled = on
	if !on {
		b.epoch++
		b.resetLocked()
		b.readyCh.broadcast()
		b.timerCh.broadcast()
	}
}

// Enabled reports whether the broker is enabled.
func (b *EvalBroker) Enabled() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.enabled
}

// Enqueue adds an evaluation, to be served to workers that ask for its
// Type. The broker keeps the pointer: the caller must not modify the
// evaluation afterwards. A nil or terminal evaluation, one
// without an id, one the broker already holds, and anything while the
// broker is disabled are ignored.
func (b *EvalBroker) Enqueue(eval *caravan.Evaluation) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.addLocked(eval, time.Now())
}

// EnqueueAll adds evaluations as Enqueue does, under one lock.
func (b *EvalBroker) EnqueueAll(evals []*caravan.Evaluation) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	for _, e := range evals {
		b.addLocked(e, now)
	}
}

func (b *EvalBroker) addLocked(eval *caravan.Evaluation, now time.Time) {
	if !b.enabled || eval == nil || eval.ID == "" || eval.Terminal() {
		return
	}
	if _, held := b.evals[eval.ID]; held {
		return
	}
	b.seq++
	t := &tracked{eval: eval, seq: b.seq, timer: -1}
	b.evals[eval.ID] = t
	if eval.WaitUntil.After(now) {
		b.setState(t, stateDelayed)
		b.setTimer(t, eval.WaitUntil)
		return
	}
	b.admitLocked(t)
}

// admitLocked makes t ready, or parks it behind its job's evaluation in
// flight, keeping only the newest one parked per job.
func (b *EvalBroker) admitLocked(t *tracked) {
	job := t.eval.JobID
	if job == "" {
		b.makeReady(t)
		return
	}
	if _, busy := b.jobs[job]; !busy {
		b.jobs[job] = t.eval.ID
		b.makeReady(t)
		return
	}
	old, parked := b.pending[job]
	switch {
	case !parked:
	case newer(t.eval, old.eval):
		b.dropLocked(old)
		b.cancel.push(old.eval)
	default:
		b.dropLocked(t)
		b.cancel.push(t.eval)
		return
	}
	b.pending[job] = t
	b.setState(t, statePending)
}

func (b *EvalBroker) makeReady(t *tracked) {
	h := b.ready[t.eval.Type]
	if h == nil {
		h = newHeap(trackedBefore)
		b.ready[t.eval.Type] = h
	}
	h.Push(t)
	b.byType[t.eval.Type]++
	b.setState(t, stateReady)
	b.readyCh.broadcast()
}

func (b *EvalBroker) setState(t *tracked, s evalState) {
	b.counts[t.state]--
	b.counts[s]++
	t.state = s
}

// dropLocked forgets t.
func (b *EvalBroker) dropLocked(t *tracked) {
	b.stopTimer(t)
	b.setState(t, stateGone)
	t.token = ""
	delete(b.evals, t.eval.ID)
}

// releaseJobLocked frees the job slot t held and makes the job's parked
// evaluation, if any, ready.
func (b *EvalBroker) releaseJobLocked(t *tracked) {
	job := t.eval.JobID
	if job == "" || b.jobs[job] != t.eval.ID {
		return
	}
	delete(b.jobs, job)
	if next, ok := b.pending[job]; ok {
		delete(b.pending, job)
		b.jobs[job] = next.eval.ID
		b.makeReady(next)
	}
}

// Dequeue returns the best ready evaluation of one of the scheduler types,
// with the token that acks it, blocking until there is one or ctx ends. The
// evaluation is shared with the broker and must not be modified. The
// delivery must be acked (or nacked) within the nack timeout, or be extended
// with OutstandingReset.
func (b *EvalBroker) Dequeue(ctx context.Context, types []string) (*caravan.Evaluation, string, error) {
	if len(types) == 0 {
		return nil, "", caravan.Invalidf("types", "dequeue needs at least one scheduler type")
	}
	var got *tracked
	var token string
	err := b.await(ctx, func() (<-chan struct{}, bool) {
		if got = b.takeLocked(types); got != nil {
			token = got.token
			return nil, true
		}
		return b.readyCh.wait(), false
	})
	if err != nil {
		return nil, "", err
	}
	return got.eval, token, nil
}

// takeLocked pops the best ready evaluation among types and delivers it.
func (b *EvalBroker) takeLocked(types []string) *tracked {
	var best *heapOf[*tracked]
	for _, typ := range types {
		h := b.ready[typ]
		if h == nil || h.Len() == 0 {
			continue
		}
		if best == nil || trackedBefore(h.Peek(), best.Peek()) {
			best = h
		}
	}
	if best == nil {
		return nil
	}
	t := best.Pop()
	b.byType[t.eval.Type]--
	b.setState(t, stateUnacked)
	t.deliveries++
	t.token = caravan.NewID()
	t.paused = false
	b.setTimer(t, time.Now().Add(b.cfg.NackTimeout))
	return t
}

// outstandingLocked returns the evaluation delivered under token.
func (b *EvalBroker) outstandingLocked(op, evalID, token string) (*tracked, error) {
	if !b.enabled {
		return nil, ErrDisabled
	}
	t := b.evals[evalID]
	if t == nil || t.state != stateUnacked || token == "" || t.token != token {
		return nil, fmt.Errorf("%s evaluation %s: %w", op, evalID, ErrNotOutstanding)
	}
	return t, nil
}

// Ack confirms that the evaluation delivered under token is done. The
// broker forgets it, and the next evaluation of its job becomes ready.
func (b *EvalBroker) Ack(evalID, token string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, err := b.outstandingLocked("ack", evalID, token)
	if err != nil {
		return err
	}
	b.dropLocked(t)
	b.releaseJobLocked(t)
	return nil
}

// Nack gives the evaluation delivered under token back: it is delivered
// again after a delay, or goes to the failed list when it has been
// delivered DeliveryLimit times.
func (b *EvalBroker) Nack(evalID, token string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, err := b.outstandingLocked("nack", evalID, token)
	if err != nil {
		return err
	}
	b.retryLocked(t, time.Now())
	return nil
}

func (b *EvalBroker) retryLocked(t *tracked, now time.Time) {
	t.token = ""
	if t.deliveries >= b.cfg.DeliveryLimit {
		b.dropLocked(t)
		b.releaseJobLocked(t)
		b.failed.push(t.eval)
		return
	}
	b.setState(t, stateWaiting)
	b.setTimer(t, now.Add(b.nackDelay(t.deliveries)))
}

// nackDelay is the wait before delivery n+1: NackDelay, doubled with every
// further delivery, at most MaxNackDelay.
func (b *EvalBroker) nackDelay(deliveries int) time.Duration {
	d := b.cfg.NackDelay
	for i := 1; i < deliveries && d < b.cfg.MaxNackDelay; i++ {
		d *= 2
	}
	return min(d, b.cfg.MaxNackDelay)
}

// OutstandingReset restarts the nack timeout of the delivery, for a worker
// that is still busy with it.
func (b *EvalBroker) OutstandingReset(evalID, token string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, err := b.outstandingLocked("reset", evalID, token)
	if err != nil {
		return err
	}
	if !t.paused {
		b.restartNackTimer(t)
	}
	return nil
}

// PauseNackTimeout stops the nack timer of the delivery, while its plan
// waits in the plan queue; ResumeNackTimeout restarts it in full.
func (b *EvalBroker) PauseNackTimeout(evalID, token string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, err := b.outstandingLocked("pause", evalID, token)
	if err != nil {
		return err
	}
	t.paused = true
	b.stopTimer(t)
	return nil
}

// ResumeNackTimeout restarts the nack timer stopped by PauseNackTimeout.
func (b *EvalBroker) ResumeNackTimeout(evalID, token string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, err := b.outstandingLocked("resume", evalID, token)
	if err != nil {
		return err
	}
	t.paused = false
	b.restartNackTimer(t)
	return nil
}

func (b *EvalBroker) restartNackTimer(t *tracked) {
	b.setTimer(t, time.Now().Add(b.cfg.NackTimeout))
}

// WaitFailed blocks until evaluations have run out of deliveries, then
// returns up to limit of them (all when limit < 1) and forgets them. The server
// marks them failed through Raft and may create a follow-up.
func (b *EvalBroker) WaitFailed(ctx context.Context, limit int) ([]*caravan.Evaluation, error) {
	return b.waitList(ctx, &b.failed, limit)
}

// WaitCancelable blocks until evaluations were superseded by a newer one of
// the same job, then returns up to limit of them (all when limit < 1) and
// forgets them. The server marks them cancelled through Raft.
func (b *EvalBroker) WaitCancelable(ctx context.Context, limit int) ([]*caravan.Evaluation, error) {
	return b.waitList(ctx, &b.cancel, limit)
}

func (b *EvalBroker) waitList(ctx context.Context, l *evalList, limit int) ([]*caravan.Evaluation, error) {
	var out []*caravan.Evaluation
	err := b.await(ctx, func() (<-chan struct{}, bool) {
		var wake <-chan struct{}
		out, wake = l.take(limit)
		return wake, out != nil
	})
	return out, err
}

// EvalStats counts what the broker holds.
type EvalStats struct {
	// Ready evaluations wait for a worker; ReadyByType splits them by
	// scheduler type.
	Ready       int            `json:"ready"`
	ReadyByType map[string]int `json:"ready_by_type,omitempty"`
	// Unacked are delivered and not acked yet.
	Unacked int `json:"unacked"`
	// Pending wait behind another evaluation of their job.
	Pending int `json:"pending"`
	// Delayed wait for their WaitUntil.
	Delayed int `json:"delayed"`
	// Waiting were nacked and wait for their redelivery delay.
	Waiting int `json:"waiting"`
	// Failed and Cancelable wait for the server to drain them.
	Failed     int `json:"failed"`
	Cancelable int `json:"cancelable"`
}

// Stats returns the current counts.
func (b *EvalBroker) Stats() EvalStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := EvalStats{
		Ready:      b.counts[stateReady],
		Unacked:    b.counts[stateUnacked],
		Pending:    b.counts[statePending],
		Delayed:    b.counts[stateDelayed],
		Waiting:    b.counts[stateWaiting],
		Failed:     len(b.failed.items),
		Cancelable: len(b.cancel.items),
	}
	for typ, n := range b.byType {
		if n > 0 {
			if s.ReadyByType == nil {
				s.ReadyByType = map[string]int{}
			}
			s.ReadyByType[typ] = n
		}
	}
	return s
}
