package logs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func readAll(t *testing.T, dir, name string, opt ReadOptions) string {
	t.Helper()
	var b bytes.Buffer
	if err := Copy(context.Background(), &b, dir, name, opt); err != nil {
		t.Fatalf("Copy: %v", err)
	}
	return b.String()
}

func indexes(t *testing.T, dir, name string) []int {
	t.Helper()
	files, err := Files(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, f := range files {
		out = append(out, f.Index)
	}
	return out
}

func TestRotation(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(dir, "t.stdout", 10, 3)
	if err != nil {
		t.Fatal(err)
	}
	// Ten writes of 4 bytes, two per file (a third would pass 10 bytes):
	// files 0 to 4, of which the newest three are kept.
	var want strings.Builder
	for i := range 10 {
		line := string(rune('a'+i)) + "..\n"
		if _, err := w.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		want.WriteString(line)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Files: 0 {a,b} 1 {c,d} 2 {e,f} 3 {g,h} 4 {i,j}; three kept.
	if got := indexes(t, dir, "t.stdout"); len(got) != 3 || got[0] != 2 || got[2] != 4 {
		t.Fatalf("files = %v, want [2 3 4]", got)
	}
	all := want.String()
	if got := readAll(t, dir, "t.stdout", ReadOptions{}); got != all[16:] {
		t.Errorf("content = %q, want the newest three files %q", got, all[16:])
	}
	if size, err := Size(dir, "t.stdout"); err != nil || size != 24 {
		t.Errorf("Size = %d, %v; want 24", size, err)
	}
	// Offsets: from the start of the oldest file, and back from the end.
	if got := readAll(t, dir, "t.stdout", ReadOptions{Offset: 6}); got != all[22:] {
		t.Errorf("offset 6 = %q, want %q", got, all[22:])
	}
	if got := readAll(t, dir, "t.stdout", ReadOptions{Offset: 4, FromEnd: true}); got != "j..\n" {
		t.Errorf("4 from the end = %q", got)
	}
	// Out of range offsets are clamped, not errors.
	if got := readAll(t, dir, "t.stdout", ReadOptions{Offset: 1000}); got != "" {
		t.Errorf("offset past the end = %q", got)
	}
	if got := readAll(t, dir, "t.stdout", ReadOptions{Offset: 1000, FromEnd: true}); got != all[16:] {
		t.Errorf("offset before the start = %q", got)
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
}

func TestWriteLargerThanFile(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(dir, "s", 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// A write is never split: one larger than the limit gets a file.
	for _, p := range []string{"ab", "0123456789", "cd"} {
		if _, err := w.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if got := readAll(t, dir, "s", ReadOptions{}); got != "0123456789cd" {
		t.Errorf("content = %q", got)
	}
}

func TestRestartContinuesNewestFile(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(dir, "s", 8, 5)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"1234", "5678", "ab"} {
		w.Write([]byte(p))
	}
	w.Close()
	// A new writer (a restarted supervisor) appends to file 1, not file 0.
	w2, err := NewWriter(dir, "s", 8, 5)
	if err != nil {
		t.Fatal(err)
	}
	w2.Write([]byte("cd"))
	w2.Close()
	if got := indexes(t, dir, "s"); len(got) != 2 {
		t.Errorf("files = %v, want 2", got)
	}
	if got := readAll(t, dir, "s", ReadOptions{}); got != "12345678abcd" {
		t.Errorf("content = %q", got)
	}
}

func TestLazyWriter(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "logs")
	w, err := NewLazyWriter(dir, "s", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the directory is not made at once: %v", err)
	}
	if got := indexes(t, dir, "s"); len(got) != 0 {
		t.Fatalf("a lazy writer made files before any output: %v", got)
	}
	if _, err := w.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, dir, "s", ReadOptions{}); got != "hi" {
		t.Errorf("content = %q", got)
	}
	// A lazy writer closed before any output leaves no file.
	w2, _ := NewLazyWriter(dir, "quiet", 0, 0)
	if err := w2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w2.Write([]byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close = %v", err)
	}
	if got := indexes(t, dir, "quiet"); len(got) != 0 {
		t.Errorf("files = %v", got)
	}
}

func TestErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewWriter(filepath.Join(file, "sub"), "s", 0, 0); err == nil {
		t.Error("NewWriter under a file: no error")
	}
	if _, err := NewLazyWriter(filepath.Join(file, "sub"), "s", 0, 0); err == nil {
		t.Error("NewLazyWriter under a file: no error")
	}
	// Reading a stream that does not exist is empty, not an error.
	if got := readAll(t, filepath.Join(t.TempDir(), "none"), "s", ReadOptions{}); got != "" {
		t.Errorf("missing stream = %q", got)
	}
	// Files that are not the stream's are ignored.
	dir := t.TempDir()
	for _, n := range []string{"s.x", "s.-1", "s", "other.0"} {
		os.WriteFile(filepath.Join(dir, n), []byte("junk"), 0o644)
	}
	os.Mkdir(filepath.Join(dir, "s.7"), 0o755)
	if got := indexes(t, dir, "s"); len(got) != 0 {
		t.Errorf("files = %v, want none", got)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestFollow(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(dir, "s", 16, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write([]byte("before\n"))
	done := make(chan struct{})
	var out syncBuffer
	copied := make(chan error, 1)
	go func() {
		copied <- Copy(context.Background(), &out, dir, "s", ReadOptions{Follow: true, Done: done, PollInterval: 5 * time.Millisecond})
	}()
	// Output written while following arrives, across rotations.
	var want strings.Builder
	want.WriteString("before\n")
	for i := range 8 {
		line := "line " + string(rune('0'+i)) + "\n"
		w.Write([]byte(line))
		want.WriteString(line)
		deadline := time.Now().Add(10 * time.Second)
		for out.String() != want.String() && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
		if out.String() != want.String() {
			t.Fatalf("follower has %q, want %q", out.String(), want.String())
		}
	}
	// Done ends the follow once everything written was sent.
	w.Write([]byte("last\n"))
	close(done)
	select {
	case err := <-copied:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the follow did not end after Done")
	}
	if got := out.String(); got != want.String()+"last\n" {
		t.Errorf("follower got %q", got)
	}

	// A follow ends with its context.
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan error, 1)
	go func() {
		ended <- Copy(ctx, &syncBuffer{}, dir, "s", ReadOptions{Follow: true, PollInterval: 5 * time.Millisecond})
	}()
	cancel()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the follow did not end with its context")
	}
}
