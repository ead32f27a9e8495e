package docker

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/caravan-sched/caravan/internal/logs"
)

var discard = slog.New(slog.DiscardHandler)

// msg is one message of the Engine's log stream.
type msg struct {
	stream byte // 1 stdout, 2 stderr
	ts     time.Time
	line   string
}

// engineStream encodes messages as the Engine sends them with timestamps.
func engineStream(msgs ...msg) []byte {
	var b bytes.Buffer
	for _, m := range msgs {
		payload := m.ts.UTC().Format("2006-01-02T15:04:05.000000000Z07:00") + " " + m.line
		var hdr [8]byte
		hdr[0] = m.stream
		binary.BigEndian.PutUint32(hdr[4:], uint32(len(payload)))
		b.Write(hdr[:])
		b.WriteString(payload)
	}
	return b.Bytes()
}

// since returns the messages the Engine sends for since=ts.
func since(ts time.Time, msgs []msg) []msg {
	var out []msg
	for _, m := range msgs {
		if !m.ts.Before(ts) {
			out = append(out, m)
		}
	}
	return out
}

func readStream(t *testing.T, dir, name string) string {
	t.Helper()
	var b bytes.Buffer
	if err := logs.Copy(context.Background(), &b, dir, name, logs.ReadOptions{}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSinkCopiesStreams(t *testing.T) {
	dir := t.TempDir()
	both := filepath.Join(t.TempDir(), "out", "job.out")
	lc := logConfig{Dir: dir, MaxFileSize: 1 << 20, MaxFiles: 2, StdoutPath: both, StderrPath: both}
	s, err := openSink(lc, "web", false, discard)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	msgs := []msg{
		{1, t0, "one\n"},
		{2, t0.Add(time.Nanosecond), "oops\n"},
		{1, t0.Add(time.Nanosecond), "two\n"},
		{1, t0.Add(2 * time.Nanosecond), "partial"},
	}
	if err := s.copyStream(bytes.NewReader(engineStream(msgs...)), discard); err != nil {
		t.Fatal(err)
	}
	s.close()
	s.close() // twice is harmless

	if got := readStream(t, dir, "web.stdout"); got != "one\ntwo\npartial" {
		t.Errorf("stdout = %q", got)
	}
	if got := readStream(t, dir, "web.stderr"); got != "oops\n" {
		t.Errorf("stderr = %q", got)
	}
	if got := readFile(t, both); got != "one\noops\ntwo\npartial" {
		t.Errorf("job output file = %q", got)
	}
	cp, err := readCheckpoint(checkpointPath(dir, "web"))
	if err != nil {
		t.Fatal(err)
	}
	want := &checkpoint{
		Position: position{Since: t0.Add(2 * time.Nanosecond), Skip: 1},
		Rotated:  map[string]fileEnd{"web.stdout": {Index: 0, Size: 15}, "web.stderr": {Index: 0, Size: 5}},
		Copies:   map[string]int64{both: 20},
	}
	if diff := cmp.Diff(want, cp); diff != "" {
		t.Errorf("checkpoint (-want +got):\n%s", diff)
	}
}

// TestSinkResumesExactlyOnce plays an agent that dies after writing output
// it had not checkpointed yet, and a new one that recovers.
func TestSinkResumesExactlyOnce(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	all := []msg{
		{1, t0, "a\n"},
		{1, t0.Add(time.Microsecond), "b\n"},
		{2, t0.Add(time.Microsecond), "e1\n"},
		{1, t0.Add(time.Microsecond), "c\n"}, // three messages share a timestamp
		{1, t0.Add(2 * time.Microsecond), "d\n"},
		{2, t0.Add(3 * time.Microsecond), "e2\n"},
	}
	for _, maxSize := range []int64{1 << 20, 3} { // 3 bytes: every message rotates
		dir := t.TempDir()
		out := filepath.Join(t.TempDir(), "stdout.txt")
		lc := logConfig{Dir: dir, MaxFileSize: maxSize, MaxFiles: 100, StdoutPath: out}

		s, err := openSink(lc, "job", false, discard)
		if err != nil {
			t.Fatal(err)
		}
		// The first agent copies up to the second message at t0+1µs and
		// checkpoints; then it writes more and dies before the next
		// checkpoint.
		if err := s.copyStream(bytes.NewReader(engineStream(all[:3]...)), discard); err != nil {
			t.Fatal(err)
		}
		for _, p := range [][]byte{[]byte("c\n"), []byte("d\n")} {
			if err := s.write(stdoutStream, p); err != nil {
				t.Fatal(err)
			}
		}
		s.close()

		// The next agent rolls back and follows from the checkpoint.
		s, err = openSink(lc, "job", true, discard)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(position{Since: t0.Add(time.Microsecond), Skip: 2}, s.pos); diff != "" {
			t.Errorf("resumed position (-want +got):\n%s", diff)
		}
		if err := s.copyStream(bytes.NewReader(engineStream(since(s.pos.Since, all)...)), discard); err != nil {
			t.Fatal(err)
		}
		s.close()

		if got := readStream(t, dir, "job.stdout"); got != "a\nb\nc\nd\n" {
			t.Errorf("max size %d: stdout = %q", maxSize, got)
		}
		if got := readStream(t, dir, "job.stderr"); got != "e1\ne2\n" {
			t.Errorf("max size %d: stderr = %q", maxSize, got)
		}
		if got := readFile(t, out); got != "a\nb\nc\nd\n" {
			t.Errorf("max size %d: stdout path = %q", maxSize, got)
		}
	}
}

func TestSinkWithoutCheckpointStartsOver(t *testing.T) {
	dir := t.TempDir()
	lc := logConfig{Dir: dir, MaxFileSize: 1 << 20, MaxFiles: 2}
	s, err := openSink(lc, "job", true, discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if !s.pos.Since.IsZero() || s.pos.Skip != 0 {
		t.Errorf("position = %+v, want the start", s.pos)
	}
	if _, err := readCheckpoint(checkpointPath(dir, "job")); err != nil {
		t.Errorf("no checkpoint written: %v", err)
	}
}

func TestCopyStreamRefusesMalformedStreams(t *testing.T) {
	ts := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	good := engineStream(msg{1, ts, "x\n"})
	tests := []struct {
		name    string
		stream  []byte
		wantBad bool // errBadLogStream rather than a read error
	}{
		{"unknown stream type", append([]byte{9, 0, 0, 0, 0, 0, 0, 1}, 'x'), true},
		{"huge frame", []byte{1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, true},
		{"no timestamp", append([]byte{1, 0, 0, 0, 0, 0, 0, 3}, "abc"...), true},
		{"bad timestamp", append([]byte{1, 0, 0, 0, 0, 0, 0, 4}, "ab c"...), true},
		{"cut header", good[:5], false},
		{"cut payload", good[:len(good)-1], false},
		{"engine error", append([]byte{3, 0, 0, 0, 0, 0, 0, 4}, "boom"...), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := openSink(logConfig{Dir: t.TempDir(), MaxFileSize: 1 << 20, MaxFiles: 1}, "job", false, discard)
			if err != nil {
				t.Fatal(err)
			}
			defer s.close()
			err = s.copyStream(bytes.NewReader(tt.stream), discard)
			if err == nil {
				t.Fatal("copyStream: no error")
			}
			if got := errors.Is(err, errBadLogStream); got != tt.wantBad {
				t.Errorf("copyStream error %v: matches errBadLogStream = %v, want %v", err, got, tt.wantBad)
			}
		})
	}
}

func TestReadCheckpointRefusesGarbage(t *testing.T) {
	dir := t.TempDir()
	for _, content := range []string{"", "{", `{"position":{"skip":-1}}`, `[]`} {
		p := filepath.Join(dir, "cp.json")
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := readCheckpoint(p); err == nil {
			t.Errorf("readCheckpoint(%q): no error", content)
		}
	}
}

func FuzzCopyStream(f *testing.F) {
	ts := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	f.Add(engineStream(msg{1, ts, "x\n"}, msg{2, ts, "y"}))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 2, 'a', ' '})
	f.Fuzz(func(t *testing.T, stream []byte) {
		s, err := openSink(logConfig{Dir: t.TempDir(), MaxFileSize: 1 << 20, MaxFiles: 1}, "job", false, discard)
		if err != nil {
			t.Fatal(err)
		}
		defer s.close()
		s.copyStream(bytes.NewReader(stream), discard) // must not panic
	})
}

// BenchmarkCopyStream measures copying a chatty container's output (80-byte
// lines) into the rotated files, checkpoints included.
func BenchmarkCopyStream(b *testing.B) {
	ts := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	line := strings.Repeat("x", 79) + "\n"
	msgs := make([]msg, 10000)
	for i := range msgs {
		msgs[i] = msg{1, ts.Add(time.Duration(i) * time.Microsecond), line}
	}
	stream := engineStream(msgs...)
	b.SetBytes(int64(len(msgs) * len(line)))
	for b.Loop() {
		s, err := openSink(logConfig{Dir: b.TempDir(), MaxFileSize: 10 << 20, MaxFiles: 2}, "job", false, discard)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.copyStream(bytes.NewReader(stream), discard); err != nil {
			b.Fatal(err)
		}
		s.close()
	}
}
