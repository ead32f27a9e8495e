package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/events"
)

var errEnough = errors.New("enough events")

// follow reads the event stream from index until stop says so, or 10 s.
func follow(t *testing.T, ts *testServer, index uint64, topics []string, stop func(*caravan.Event) bool) []*caravan.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []*caravan.Event
	err := ts.client(t, "").EventStream(ctx, index, topics, func(e *caravan.Event) error {
		got = append(got, e)
		if stop(e) {
			return errEnough
		}
		return nil
	})
	if !errors.Is(err, errEnough) {
		t.Fatalf("event stream ended with %v after %d events", err, len(got))
	}
	return got
}

// clientStatus reads an allocation event's client status.
func clientStatus(e *caravan.Event) string {
	p, _ := e.Payload.(map[string]any)
	s, _ := p["client_status"].(string)
	return s
}

func TestEventStreamOrderAndResume(t *testing.T) {
	ts := startLeader(t)
	ctx := context.Background()
	n := registerNode(t, ts, 0)
	from := ts.srv.State().LatestIndex()

	c := ts.client(t, "")
	if _, err := c.RegisterJob(ctx, sleepJob("web", 1)); err != nil {
		t.Fatal(err)
	}
	al := waitAllocs(t, ts, "web", 1)[0]
	agent := ts.client(t, n.SecretID)
	if _, err := agent.UpdateAllocations(ctx, n.ID, []*caravan.AllocClientUpdate{{ID: al.ID, ClientStatus: caravan.AllocClientRunning}}); err != nil {
		t.Fatal(err)
	}

	running := func(e *caravan.Event) bool {
		return e.Type == events.AllocationUpdated && clientStatus(e) == caravan.AllocClientRunning
	}
	got := follow(t, ts, from, []string{"Job:web", "Allocation:web"}, running)
	var types []string
	var last uint64
	for _, e := range got {
		if e.Index < last {
			t.Errorf("event %s at index %d after index %d", e.Type, e.Index, last)
		}
		last = e.Index
		if e.Key != "web" && e.Key != al.ID {
			t.Errorf("event of another object: %+v", e)
		}
		if len(types) == 0 || types[len(types)-1] != e.Type {
			types = append(types, e.Type)
		}
	}
	// Job status updates may come between; the order of these must hold.
	want := []string{events.JobRegistered, events.AllocationCreated, events.AllocationUpdated}
	if diff := cmp.Diff(want, subsequence(types, want)); diff != "" {
		t.Errorf("event order (-want +got), all %v:\n%s", types, diff)
	}

	// Resuming after the registration replays what followed it.
	reg := got[0]
	again := follow(t, ts, reg.Index, []string{"Allocation"}, running)
	if again[0].Index <= reg.Index || again[0].Type != events.AllocationCreated {
		t.Errorf("resumed at %+v, want the allocation's creation after index %d", again[0], reg.Index)
	}
}

// subsequence returns the items of want found in order in got.
func subsequence(got, want []string) []string {
	var out []string
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			out = append(out, g)
			i++
		}
	}
	return out
}

// TestEventStreamKeepAliveAndCutOff drives the stream writer with a small
// broker: idle streams send "{}", and a subscriber that fell behind gets an
// error line and the end of the stream.
func TestEventStreamKeepAliveAndCutOff(t *testing.T) {
	a := &API{logger: testLogger(), keepAlive: 20 * time.Millisecond}
	a.stopped, a.stop = context.WithCancel(context.Background())
	defer a.stop()
	b := events.NewBroker(16)
	sub, err := b.Subscribe(events.SubscribeRequest{BufferSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/v1/event/stream", nil).WithContext(ctx)
	a.streamEvents(rec, req, sub)
	lines := strings.Split(strings.TrimSpace(rec.Body.String()), "\n")
	if len(lines) < 2 || lines[0] != "{}" {
		t.Errorf("idle stream sent %q, want keep-alive lines", lines)
	}

	// Two events for a queue of one: cut off.
	b.Publish([]events.Event{{Topic: events.TopicJob, Type: events.JobRegistered, Key: "a", Index: 5}})
	b.Publish([]events.Event{{Topic: events.TopicJob, Type: events.JobRegistered, Key: "b", Index: 6}})
	rec = httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.streamEvents(rec, httptest.NewRequest(http.MethodGet, "/v1/event/stream", nil), sub)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream of a cut-off subscriber did not end")
	}
	sc := bufio.NewScanner(strings.NewReader(rec.Body.String()))
	var lastLine string
	for sc.Scan() {
		lastLine = sc.Text()
	}
	var e caravan.ErrorResponse
	if err := json.Unmarshal([]byte(lastLine), &e); err != nil || !strings.Contains(e.Error, "fell more than") {
		t.Errorf("last line %q, want an error line", lastLine)
	}
}

// TestEventStreamShutdown: a server that stops ends its streams with an
// error line.
func TestEventStreamShutdown(t *testing.T) {
	a := &API{logger: testLogger(), keepAlive: time.Minute}
	a.stopped, a.stop = context.WithCancel(context.Background())
	sub, err := events.NewBroker(16).Subscribe(events.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	time.AfterFunc(50*time.Millisecond, a.stop)
	rec := httptest.NewRecorder()
	a.streamEvents(rec, httptest.NewRequest(http.MethodGet, "/v1/event/stream", nil), sub)
	if !strings.Contains(rec.Body.String(), "shutting down") {
		t.Errorf("stream at shutdown: %q", rec.Body)
	}
}

func TestEventStreamTooOldIndex(t *testing.T) {
	ts := startLeader(t)
	// Push the first events out of the ring by resetting the broker past
	// them, as a snapshot restore does.
	ts.srv.Events().Reset(ts.srv.State().LatestIndex() + 100)
	a := call(t, http.MethodGet, ts.url+"/v1/event/stream?index=1", "")
	if a.status != http.StatusConflict {
		t.Errorf("status %d, want 409: %s", a.status, a.body)
	}
}
