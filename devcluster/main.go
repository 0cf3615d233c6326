// Command devcluster is a single binary holding a real Kubernetes control
// plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) and
// kubectl, built from the published k8s.io/kubernetes module. It exists so
// the project can run its integration tests and dev stack on a machine with
// no container runtime; the first argument picks the component.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

const usage = "usage: devcluster etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kubectl [flags]"

func main() {
	// Invoked through a symlink named after a component, behave as that
	// component; otherwise (devcluster, or the content-hashed cache file
	// devcluster-<hash>) the first argument names it.
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if strings.HasPrefix(name, "devcluster") {
		if len(args) == 0 {
			fmt.Fprintln(os.Stderr, usage)
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	switch name {
	case "etcd":
		etcdmain.Main(append([]string{"etcd"}, args...))
	case "kube-apiserver":
		run(apiserver.NewAPIServerCommand(), args)
	case "kube-controller-manager":
		run(controllermanager.NewControllerManagerCommand(), args)
	case "kube-scheduler":
		run(scheduler.NewSchedulerCommand(), args)
	case "kubectl":
		run(kubectlcmd.NewDefaultKubectlCommand(), args)
	default:
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
}

func run(cmd *cobra.Command, args []string) {
	cmd.SetArgs(args)
	os.Exit(cli.Run(cmd))
}
