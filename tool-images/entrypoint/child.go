package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

const (
	stderrKeep = 4000            // bytes of the program's stderr kept for error texts
	pipeGrace  = 5 * time.Second // how long to wait for stdout/stderr after the program exits
)

// childOutcome is how the program's run went.
type childOutcome struct {
	startErr   error
	exitCode   int    // -1 when it was stopped by a signal
	state      string // e.g. "exit status 3", "signal: killed"
	stdout     []byte
	overflow   bool
	stderrTail string
	elapsed    time.Duration
}

// runChild runs the program with stdin, captures at most maxStdout bytes of its stdout,
// passes its stderr through (keeping the tail) and forwards SIGTERM and SIGINT to it.
func runChild(command []string, env []string, stdin []byte, maxStdout int, stderr io.Writer) childOutcome {
	path := command[0]
	if !strings.Contains(path, "/") {
		found, err := exec.LookPath(path)
		if err != nil {
			return childOutcome{startErr: err}
		}
		path = found
	}
	cmd := exec.Command(path, command[1:]...)
	cmd.Args[0] = command[0]
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	out := &capped{limit: maxStdout}
	tail := &ring{limit: stderrKeep}
	cmd.Stdout = out
	cmd.Stderr = &passThrough{to: stderr, keep: tail}
	cmd.WaitDelay = pipeGrace

	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(signals)
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return childOutcome{startErr: err}
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case sig := <-signals:
				_ = cmd.Process.Signal(sig)
			case <-done:
				return
			}
		}
	}()
	waitErr := cmd.Wait()
	close(done)
	outcome := childOutcome{
		exitCode:   -1,
		stdout:     out.buf.Bytes(),
		overflow:   out.overflow,
		stderrTail: tail.String(),
		elapsed:    time.Since(started),
	}
	if state := cmd.ProcessState; state != nil {
		outcome.exitCode = state.ExitCode()
		outcome.state = state.String()
	} else if waitErr != nil {
		outcome.state = waitErr.Error()
	}
	if waitErr != nil && !errors.Is(waitErr, exec.ErrWaitDelay) && outcome.exitCode == 0 {
		// The program exited 0 but its output could not be read in full.
		outcome.exitCode, outcome.state = -1, waitErr.Error()
	}
	return outcome
}

// childEnv is our environment plus SBA_IDEMPOTENCY_KEY; params go on stdin only.
func childEnv(environ []string, key string) []string {
	env := make([]string, 0, len(environ)+1)
	for _, kv := range environ {
		if strings.HasPrefix(kv, "SBA_PARAMS=") || strings.HasPrefix(kv, "SBA_IDEMPOTENCY_KEY=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "SBA_IDEMPOTENCY_KEY="+key)
}

// capped keeps at most limit bytes and remembers whether more came.
type capped struct {
	buf      bytes.Buffer
	limit    int
	overflow bool
}

func (c *capped) Write(p []byte) (int, error) {
	room := c.limit - c.buf.Len()
	if len(p) > room {
		c.overflow = true
		if room > 0 {
			c.buf.Write(p[:room])
		}
		return len(p), nil
	}
	return c.buf.Write(p)
}

// ring keeps the last limit bytes written.
type ring struct {
	data  []byte
	limit int
}

func (r *ring) Write(p []byte) (int, error) {
	r.data = append(r.data, p...)
	if len(r.data) > r.limit {
		r.data = append(r.data[:0], r.data[len(r.data)-r.limit:]...)
	}
	return len(p), nil
}

func (r *ring) String() string { return strings.ToValidUTF8(string(r.data), "") }

// passThrough copies to `to` (errors there are ignored: a closed stderr must not fail
// the step) and to `keep`.
type passThrough struct {
	to   io.Writer
	keep io.Writer
}

func (p *passThrough) Write(b []byte) (int, error) {
	_, _ = p.keep.Write(b)
	if p.to != nil {
		_, _ = p.to.Write(b)
	}
	return len(b), nil
}

// lastLines is the end of text: its last non-empty lines, at most limit bytes.
func lastLines(text string, limit int) string {
	lines := strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n")
	var kept []string
	size := 0
	for i := len(lines) - 1; i >= 0; i-- {
		line := strings.TrimRight(lines[i], " \t\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		extra := len(line)
		if len(kept) > 0 {
			extra++ // the newline
		}
		if size+extra > limit {
			if len(kept) == 0 {
				kept = append(kept, clipStart(line, limit))
			}
			break
		}
		kept = append(kept, line)
		size += extra
	}
	for i, j := 0, len(kept)-1; i < j; i, j = i+1, j-1 {
		kept[i], kept[j] = kept[j], kept[i]
	}
	return strings.Join(kept, "\n")
}
