package httpapi

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/caravan-sched/caravan/api"
)

// TestShutdownEndsLongRequests checks that blocking queries, event streams
// and log follows end when the server stops, instead of holding its
// shutdown or outliving it.
func TestShutdownEndsLongRequests(t *testing.T) {
	ts := startLeader(t)
	c := ts.client(t, "")
	ctx := context.Background()
	_, meta, err := c.Jobs(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	query := inBackground(func() (uint64, error) {
		_, m, err := c.Jobs(ctx, &api.QueryOptions{Index: meta.LastIndex, Wait: time.Minute})
		if m == nil {
			return 0, err
		}
		return m.LastIndex, err
	})
	stream := make(chan error, 1)
	go func() {
		resp, err := c.Raw(ctx, http.MethodGet, "/v1/event/stream", nil)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		stream <- err
	}()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	ts.stop()
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the server took %v to stop", took)
	}
	r := waitResult(t, query, 5*time.Second)
	if r.took > 10*time.Second {
		t.Errorf("blocking query: %+v", r)
	}
	select {
	case <-stream:
	case <-time.After(5 * time.Second):
		t.Error("the event stream outlived the server")
	}
}
