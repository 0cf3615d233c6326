package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTheStaticBinary builds sba-step as the image does and runs its subcommands.
func TestTheStaticBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go toolchain")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "sba-step")
	build := exec.Command(goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	out, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.Contains(string(out), "0.") {
		t.Fatalf("version: %q %v", out, err)
	}

	dest := filepath.Join(dir, "shared", "entrypoint", "sba-step")
	if out, err := exec.Command(bin, "install", dest).CombinedOutput(); err != nil {
		t.Fatalf("install: %v %s", err, out)
	}
	info, err := os.Stat(dest)
	original, _ := os.ReadFile(bin)
	copied, _ := os.ReadFile(dest)
	if err != nil || info.Mode().Perm() != 0o755 || !bytes.Equal(original, copied) {
		t.Fatalf("installed %v %v", info, err)
	}
	if err := exec.Command(bin, "install", filepath.Join(bin, "not-a-dir", "sba-step")).Run(); err == nil {
		t.Fatal("install into an impossible path succeeded")
	} else if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() != 2 {
		t.Fatalf("install failure: %v", err)
	}

	var posted string
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "GET" {
			w.Write([]byte(`{"runId":"r","tenant":"t","stepId":"s","attempt":1,"tool":"echo","params":{"x":1},"idempotencyKey":"r:s"}`))
			return
		}
		var b bytes.Buffer
		b.ReadFrom(r.Body)
		posted = b.String()
		w.Write([]byte(`{"callId":"c"}`))
	}))
	defer server.Close()
	termination := filepath.Join(dir, "termination-log")
	step := exec.Command(dest, "--", "sh", "-c", `read -r line; echo "{\"got\": $line}"`)
	step.Env = append(os.Environ(), "SBA_GATEWAY_URL="+server.URL, "SBA_STEP_TOKEN=tok", "SBA_TERMINATION_LOG="+termination)
	if out, err := step.CombinedOutput(); err != nil {
		t.Fatalf("step: %v\n%s", err, out)
	}
	message, _ := os.ReadFile(termination)
	if !strings.Contains(posted, `"got":{"x":1}`) || !strings.Contains(string(message), `"ok":true`) {
		t.Fatalf("posted %s, termination %s", posted, message)
	}
}
