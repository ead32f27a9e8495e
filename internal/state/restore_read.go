package state

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"

	"github.com/caravan-sched/caravan"
	jsonv2 "github.com/go-json-experiment/json"
	"golang.org/x/sync/errgroup"
)

// Restore reads the persisted state in three stages: one goroutine splits
// the stream into batches of rows, workers decode batches in parallel (JSON
// decoding is most of the time; go-json-experiment/json does it in about
// half the time of encoding/json), and the restorer inserts the decoded
// batches in stream order. Memory stays bounded by the batches in flight.

// restoreBatchRows is how many rows one batch holds.
const restoreBatchRows = 512

// rowBatch is a run of rows of one section.
type rowBatch struct {
	section string
	// first is the number of the batch's first row in its section.
	first int
	lines [][]byte
	// end marks the end of the stream.
	end bool

	rows []any
	err  error
	done chan struct{}
}

// load reads a persisted state into the restorer's transaction.
func (rs *restorer) load(r io.Reader) error {
	workers := max(1, min(runtime.GOMAXPROCS(0), 8))
	g, ctx := errgroup.WithContext(context.Background())
	work := make(chan *rowBatch, workers)
	ordered := make(chan *rowBatch, 2*workers)
	g.Go(func() error {
		defer close(work)
		defer close(ordered)
		return splitBatches(ctx, bufio.NewReaderSize(r, 1<<20), work, ordered)
	})
	for range workers {
		g.Go(func() error {
			for b := range work {
				b.rows, b.err = decodeRows(b)
				close(b.done)
			}
			return nil
		})
	}
	g.Go(func() error {
		for b := range ordered {
			select {
			case <-b.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			if b.err != nil {
				return b.err
			}
			if b.end {
				return rs.finish()
			}
			for i, row := range b.rows {
				if err := rs.insert(b.section, row); err != nil {
					return fmt.Errorf("section %s, row %d: %w", b.section, b.first+i, err)
				}
			}
		}
		return ctx.Err()
	})
	return g.Wait()
}

// splitBatches reads the header and the sections, and hands every batch to
// the workers and, in order, to the restorer.
func splitBatches(ctx context.Context, br *bufio.Reader, work, ordered chan<- *rowBatch) error {
	var h persistHeader
	if err := readJSONLine(br, &h); err != nil {
		return fmt.Errorf("read header: %w", err)
	}
	if h.Format != persistFormat || h.Version != persistVersion {
		return fmt.Errorf("not a caravan state snapshot (format %q version %d): %w", h.Format, h.Version, caravan.ErrInvalid)
	}
	send := func(b *rowBatch) error {
		b.done = make(chan struct{})
		for _, ch := range []chan<- *rowBatch{work, ordered} {
			select {
			case ch <- b:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	for {
		var sec sectionHeader
		if err := readJSONLine(br, &sec); err != nil {
			return fmt.Errorf("read section header: %w", err)
		}
		if sec.End {
			return send(&rowBatch{end: true})
		}
		if !knownSection(sec.Table) {
			return fmt.Errorf("unknown section %q: %w", sec.Table, caravan.ErrInvalid)
		}
		if sec.Count < 0 {
			return fmt.Errorf("section %q: negative count %d: %w", sec.Table, sec.Count, caravan.ErrInvalid)
		}
		for first := 0; first < sec.Count; first += restoreBatchRows {
			b := &rowBatch{section: sec.Table, first: first}
			for i := first; i < min(sec.Count, first+restoreBatchRows); i++ {
				line, err := readLine(br)
				if err != nil {
					return fmt.Errorf("section %s, row %d: %w", sec.Table, i, err)
				}
				b.lines = append(b.lines, line)
			}
			if err := send(b); err != nil {
				return err
			}
		}
	}
}

// readLine returns the next line, without its newline. A stream that ends
// early is io.ErrUnexpectedEOF.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		part, err := br.ReadSlice('\n')
		line = append(line, part...)
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

func readJSONLine(br *bufio.Reader, v any) error {
	line, err := readLine(br)
	if err != nil {
		return err
	}
	if err := jsonv2.Unmarshal(line, v); err != nil {
		return fmt.Errorf("%v: %w", err, caravan.ErrInvalid)
	}
	return nil
}

func knownSection(name string) bool {
	switch name {
	case TableIndex, TableSequence, TableServers, TableNodes, TableEvals, TableJobVersions,
		TableJobs, TableJobSummary, sectionOrphanJobs, TableAllocs:
		return true
	}
	return false
}

// decodeRows decodes a batch's lines into the section's row type.
func decodeRows(b *rowBatch) ([]any, error) {
	switch b.section {
	case TableIndex:
		return decodeAll[indexRow](b)
	case TableSequence:
		return decodeAll[sequenceRow](b)
	case TableServers:
		return decodeAll[ServerMember](b)
	case TableNodes:
		return decodeAll[caravan.Node](b)
	case TableEvals:
		return decodeAll[caravan.Evaluation](b)
	case TableJobVersions, sectionOrphanJobs:
		return decodeAll[caravan.Job](b)
	case TableJobs:
		return decodeAll[jobRow](b)
	case TableJobSummary:
		return decodeAll[summaryRow](b)
	case TableAllocs:
		return decodeAll[caravan.Allocation](b)
	}
	return nil, nil
}

// decodeAll decodes each line into its own T: rows live on in the store
// one by one, so they must not share an array.
func decodeAll[T any](b *rowBatch) ([]any, error) {
	rows := make([]any, len(b.lines))
	for i, line := range b.lines {
		if bytes.Equal(bytes.TrimSpace(line), []byte("null")) {
			return nil, fmt.Errorf("section %s, row %d: null: %w", b.section, b.first+i, caravan.ErrInvalid)
		}
		v := new(T)
		if err := jsonv2.Unmarshal(line, v); err != nil {
			return nil, fmt.Errorf("section %s, row %d: %v: %w", b.section, b.first+i, err, caravan.ErrInvalid)
		}
		rows[i] = v
	}
	return rows, nil
}
