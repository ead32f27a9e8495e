package httpapi

import (
	"context"
	"iter"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
	"github.com/caravan-sched/caravan/internal/state"
)

// Blocking query and paging limits.
const (
	// defaultWait is how long a blocking query waits without ?wait.
	defaultWait = 5 * time.Minute
	// maxWait bounds ?wait; longer waits are cut to it.
	maxWait = 10 * time.Minute
	// maxPerPage bounds ?per_page; larger pages are cut to it.
	maxPerPage = 10_000
)

// blocking holds a read's blocking query parameters.
type blocking struct {
	index uint64
	wait  time.Duration
}

// parseBlocking reads ?index (a Raft index) and ?wait (a duration such as
// "30s"; a bare number is seconds).
func parseBlocking(r *http.Request) (blocking, error) {
	q := r.URL.Query()
	b := blocking{wait: defaultWait}
	if s := q.Get("index"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return b, caravan.Invalidf("index", "%q: use a Raft index (a whole number, 0 or more)", s)
		}
		b.index = n
	}
	if s := q.Get("wait"); s != "" {
		d, err := caravan.ParseDuration(s)
		if err != nil {
			return b, caravan.Invalidf("wait", "%v", err)
		}
		if d > 0 {
			b.wait = min(d.D(), maxWait)
		}
	}
	return b, nil
}

// jitter adds up to 1/16 of d, so clients that started together do not
// come back together.
func jitter(d time.Duration) time.Duration {
	return d + rand.N(d/16+1)
}

// readMeta is what a read says beside its body.
type readMeta struct {
	// next is the id that starts the next page (X-Caravan-Next-Token).
	next string
}

// readFunc reads from a snapshot: the body, and the index of what it read.
type readFunc[T any] func(snap *state.Snapshot, meta *readMeta) (T, uint64, error)

// serveRead answers a read, as a blocking query when ?index is given: the
// read runs again each time something it read changes, until the index it
// returns passes ?index or ?wait (jittered) runs out (or the server stops),
// and then answers with what it read last. X-Caravan-Index carries the index (at least 1, so a
// client that blocks on it never spins on 0).
func serveRead[T any](a *API, w http.ResponseWriter, r *http.Request, read readFunc[T]) error {
	b, err := parseBlocking(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	if b.index > 0 {
		var cancel, stop context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, jitter(b.wait))
		defer cancel()
		ctx, stop = a.untilShutdown(ctx)
		defer stop()
	}
	var out T
	var meta readMeta
	index, err := a.store.BlockingQuery(ctx, b.index, func(_ memdb.WatchSet, snap *state.Snapshot) (uint64, error) {
		meta = readMeta{}
		var idx uint64
		var err error
		out, idx, err = read(snap, &meta)
		return max(idx, 1), err
	})
	if err != nil {
		return err
	}
	if err := r.Context().Err(); err != nil {
		return err
	}
	w.Header().Set(api.HeaderIndex, strconv.FormatUint(index, 10))
	if meta.next != "" {
		w.Header().Set(api.HeaderNextToken, meta.next)
	}
	encode(w, r, http.StatusOK, out)
	return nil
}

// paging selects a page of a list: ids with prefix, from start (the
// next_token of the previous page), at most perPage (0: all).
type paging struct {
	prefix  string
	start   string
	perPage int
}

// parsePaging reads ?prefix, ?next_token and ?per_page.
func parsePaging(r *http.Request) (paging, error) {
	q := r.URL.Query()
	p := paging{prefix: q.Get("prefix"), start: q.Get("next_token")}
	if s := q.Get("per_page"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return p, caravan.Invalidf("per_page", "%q: use a whole number, 1 or more", s)
		}
		p.perPage = min(n, maxPerPage)
	}
	return p, nil
}

// listOptions are the state store's form of the page.
func (p paging) listOptions() state.ListOptions {
	return state.ListOptions{Prefix: p.prefix, Start: p.start}
}

// collect takes the items of seq that keep accepts (all when keep is nil),
// up to a page, and returns them with the id of the first item of the
// next page ("" when there is none).
func collect[T any](seq iter.Seq[T], p paging, keep func(T) bool, id func(T) string) ([]T, string) {
	out := []T{}
	for v := range seq {
		if keep != nil && !keep(v) {
			continue
		}
		if p.perPage > 0 && len(out) == p.perPage {
			return out, id(v)
		}
		out = append(out, v)
	}
	return out, ""
}

// sliceSeq iterates a list sorted by id from the page's start, keeping ids
// with the page's prefix.
func sliceSeq[T any](list []T, p paging, id func(T) string) iter.Seq[T] {
	from := max(p.start, p.prefix)
	i, _ := slices.BinarySearchFunc(list, from, func(v T, key string) int { return strings.Compare(id(v), key) })
	return func(yield func(T) bool) {
		for _, v := range list[i:] {
			if !strings.HasPrefix(id(v), p.prefix) || !yield(v) {
				return
			}
		}
	}
}

// oneOf checks an optional filter parameter against its allowed values.
func oneOf(r *http.Request, name string, allowed ...string) (string, error) {
	s := r.URL.Query().Get(name)
	if s == "" || slices.Contains(allowed, s) {
		return s, nil
	}
	return "", caravan.Invalidf(name, "%q: use one of %s", s, strings.Join(allowed, ", "))
}
