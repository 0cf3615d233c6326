// sba-step: the static entrypoint of every user tool's container.
//
// A user tool is any program that reads its params as one JSON object on stdin and
// writes its result as one JSON object on stdout. An init container copies this binary
// into a shared emptyDir (`sba-step install <dest>`); the tool's container runs
// `sba-step -- <command> [args...]`, which fetches the step from the API's tool gateway,
// runs the program, and posts the result (or the failure) back.
//
// Exit codes: 0 the result was recorded; 1 transient failure (the Job may retry);
// 2 permanent failure (retrying the same input cannot help).
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=…" when wanted.
var version = "0.1.0"

const usage = "usage: sba-step install <dest> | sba-step version | sba-step -- <command> [args...]"

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Environ(), os.Stdout, os.Stderr))
}

// run is the whole program; it returns the exit code.
func run(args []string, getenv func(string) string, environ []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return exitPermanent
	}
	switch args[0] {
	case "install":
		if len(args) != 2 {
			fmt.Fprintln(stderr, "usage: sba-step install <dest>")
			return exitPermanent
		}
		if err := install(args[1]); err != nil {
			fmt.Fprintf(stderr, "sba-step install: %v\n", err)
			return exitPermanent
		}
		return exitOK
	case "version", "--version":
		fmt.Fprintln(stdout, "sba-step "+version)
		return exitOK
	case "--":
		if len(args) < 2 || args[1] == "" {
			fmt.Fprintln(stderr, "sba-step: no command after --")
			writeTermination(terminationPath(getenv), map[string]any{"ok": false, "error": "sba-step: no command after --", "retryable": false})
			return exitPermanent
		}
		step, err := stepFromEnv(getenv)
		if err != nil {
			(&jsonLog{out: stderr}).error("step.misconfigured", map[string]any{"error": err.Error()})
			writeTermination(terminationPath(getenv), map[string]any{"ok": false, "error": err.Error(), "retryable": false})
			return exitPermanent
		}
		step.log.out = stderr
		return step.execute(args[1:], environ, stderr)
	}
	fmt.Fprintf(stderr, "sba-step: unknown subcommand %q\n%s\n", args[0], usage)
	return exitPermanent
}
