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
	"path/filepath"
)

const version = "0.1.0"

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: sba-step install <dest> | sba-step version | sba-step -- <command> [args...]")
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
	case "version":
		fmt.Println(version)
		return exitOK
	case "--":
		if len(args) < 2 {
			fmt.Fprintln(stderr, "sba-step: no command after --")
			return exitPermanent
		}
		step, err := stepFromEnv(os.Getenv)
		if err != nil {
			writeTermination(terminationPath(os.Getenv), map[string]any{"ok": false, "error": err.Error(), "retryable": false})
			fmt.Fprintf(stderr, "sba-step: %v\n", err)
			return exitPermanent
		}
		return step.execute(args[1:], os.Environ(), stderr)
	}
	fmt.Fprintf(stderr, "sba-step: unknown subcommand %q\n", args[0])
	return exitPermanent
}

// install copies this executable to dest atomically (write a temporary file, rename).
func install(dest string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	src, err := os.Open(self)
	if err != nil {
		return err
	}
	defer src.Close()
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	tmp := fmt.Sprintf("%s.tmp-%d", dest, os.Getpid())
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, src); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dest)
}
