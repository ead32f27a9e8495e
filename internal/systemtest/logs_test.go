package systemtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
	"github.com/caravan-sched/caravan/internal/testenv"
)

// arrival is one line of output and when the reader got it.
type arrival struct {
	line string
	at   time.Time
}

// lineClock collects what a writer receives, line by line, with the time
// each line was complete.
type lineClock struct {
	mu      sync.Mutex
	partial []byte
	lines   []arrival
}

func (l *lineClock) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.lines = append(l.lines, arrival{string(l.partial[:i]), time.Now()})
		l.partial = l.partial[i+1:]
	}
}

func (l *lineClock) get() []arrival {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]arrival(nil), l.lines...)
}

// TestLogsFollowLive follows a task's output while it prints, through the
// server's proxied logs route (the server and the agent are separate
// processes): with `caravan alloc logs -f` and with the Go client. Lines
// must arrive as they are printed, before the task ends, and the follow
// must end by itself when the task does.
func TestLogsFollowLive(t *testing.T) {
	testenv.RequireCgroups(t)
	sb := newSandbox(t)
	srv := sb.newServer("server", serverConfig("10s", "10s"))
	srv.start()
	srv.waitHealthy(t)
	c := sb.client(srv.addr)
	ag, _ := sb.newAgent("node1", srv.addr)
	ag.start()
	readyNode(t, c, "node1", startWait)

	const lines, every = 8, 400 * time.Millisecond
	mustRegister(t, c, execJob("printer", caravan.JobTypeBatch,
		fmt.Sprintf(`i=1; while [ $i -le %d ]; do echo "line $i"; i=$((i+1)); sleep %.1f; done`, lines, every.Seconds()), 1))
	var al *caravan.Allocation
	waitFor(t, 30*time.Second, "the printer running", func() bool {
		allocs := jobAllocs(c, "printer")
		if len(allocs) == 1 && allocs[0].ClientStatus == caravan.AllocClientRunning {
			al = allocs[0]
			return true
		}
		return false
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The Go client, beside the CLI.
	viaClient := &lineClock{}
	clientDone := make(chan error, 1)
	go func() {
		clientDone <- c.Logs(ctx, al.ID, api.LogOptions{Task: "t", Follow: true}, viaClient)
	}()

	cli := exec.CommandContext(ctx, sb.bin, "alloc", "logs", "-f", "--address", "http://"+srv.addr, al.ID)
	cli.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cli.Stderr = &stderr
	out, err := cli.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	followStart := time.Now()
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	viaCLI := &lineClock{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		viaCLI.Write([]byte(sc.Text() + "\n"))
	}
	err = cli.Wait()
	cliEnded := time.Now()
	if err != nil {
		t.Errorf("caravan alloc logs -f: %v\n%s", err, stderr.String())
	}
	select {
	case err := <-clientDone:
		if err != nil {
			t.Errorf("client Logs follow: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the client's follow did not end with the task")
	}

	var finished time.Time
	waitFor(t, 10*time.Second, "the printer complete", func() bool {
		a := alloc(c, al.ID)
		if a == nil || a.ClientStatus != caravan.AllocClientComplete {
			return false
		}
		finished = a.TaskStates["t"].FinishedAt
		return true
	})
	for name, got := range map[string][]arrival{"caravan alloc logs -f": viaCLI.get(), "api.Client.Logs": viaClient.get()} {
		var text []string
		for _, a := range got {
			text = append(text, a.line)
		}
		var want []string
		for i := 1; i <= lines; i++ {
			want = append(want, fmt.Sprintf("line %d", i))
		}
		if strings.Join(text, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s printed %q, want %q", name, text, want)
			continue
		}
		early := 0
		for _, a := range got {
			if a.at.Before(finished) {
				early++
			}
		}
		span := got[len(got)-1].at.Sub(got[0].at)
		t.Logf("%s: first line %v after the follow started, %d of %d lines before the task ended, lines spread over %v",
			name, got[0].at.Sub(followStart).Round(time.Millisecond), early, lines, span.Round(time.Millisecond))
		// The task prints for (lines-1)*every after its first line; a
		// follow that streams sees most of it before the end.
		if early < lines/2 || span < time.Duration(lines/2)*every {
			t.Errorf("%s: lines did not arrive live (%d before the end, spread over %v)", name, early, span)
		}
	}
	t.Logf("the CLI ended %v after the task finished", cliEnded.Sub(finished).Round(time.Millisecond))

	// A follow ends when the agent behind it dies, and a read while it is
	// down is refused at once (502) rather than left hanging.
	mustRegister(t, c, execJob("talker", caravan.JobTypeService, "while true; do echo tick; sleep 0.2; done", 1))
	var talker *caravan.Allocation
	waitFor(t, 30*time.Second, "the talker running", func() bool {
		as := running(jobAllocs(c, "talker"))
		if len(as) == 1 {
			talker = as[0]
			return true
		}
		return false
	})
	ticks := &lineClock{}
	followDone := make(chan error, 1)
	go func() { followDone <- c.Logs(ctx, talker.ID, api.LogOptions{Task: "t", Follow: true}, ticks) }()
	waitFor(t, 10*time.Second, "ticks through the follow", func() bool { return len(ticks.get()) >= 3 })
	ag.proc.kill9(t)
	killed := time.Now()
	select {
	case err := <-followDone:
		t.Logf("the follow ended %v after its agent was killed: %v", time.Since(killed).Round(time.Millisecond), err)
	case <-time.After(15 * time.Second):
		t.Fatal("the follow did not end within 15s of its agent's death")
	}
	rctx, rcancel := reqCtx()
	defer rcancel()
	start := time.Now()
	err = c.Logs(rctx, talker.ID, api.LogOptions{Task: "t"}, io.Discard)
	var apiErr *api.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadGateway {
		t.Errorf("logs with the agent down: %v, want a 502", err)
	} else {
		t.Logf("logs with the agent down: 502 in %v: %s", time.Since(start).Round(time.Millisecond), apiErr.Message)
	}
}
