package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/lazycr/lazycr/probe"
	"github.com/spf13/cobra"
)

func newCheckCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Probe this kernel for every feature lazy migration uses",
		Long: `check tries, one by one, every kernel feature lazycr relies on (userfaultfd
and its features and ioctls, ptrace seize/interrupt, process_vm_readv/writev,
pidfd_getfd, PTRACE_O_SUSPEND_SECCOMP, clone3 with set_tid, PR_SET_MM_MAP, rseq configuration,
PAGEMAP_SCAN, network namespaces, the special-mapping layout, the XSAVE size)
by actually using it, never by kernel version. It leaves nothing behind.

It exits 1, naming them, when a required feature is missing. STATUS
"denied" means the kernel may have the feature but this user may not use it
(EPERM, EACCES, a missing capability): run as root, or see the detail.`,
		Example: `  lazycr check
  lazycr check --json | jq '.[] | select(.ok == false)'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			results := probe.All(cmd.Context())
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(results); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(g.stdout, 2, 8, 2, ' ', 0)
				fmt.Fprintln(tw, "FEATURE\tSTATUS\tDETAIL")
				for _, r := range results {
					status := "ok"
					if !r.OK {
						status = "missing"
						if r.Denied {
							status = "denied"
						}
						if !r.Required {
							status += " (optional)"
						}
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, status, r.Detail)
				}
				tw.Flush()
			}
			return checkVerdict(results)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the results as a JSON array")
	return cmd
}

// checkVerdict is check's closing error: nil when every required feature
// works, else the missing ones, told apart by cause: a kernel without the
// feature, or a caller without the privilege to use it.
func checkVerdict(results []probe.Result) error {
	var unsupported, denied []string
	for _, r := range results {
		switch {
		case !r.Required || r.OK:
		case r.Denied:
			denied = append(denied, r.Name)
		default:
			unsupported = append(unsupported, r.Name)
		}
	}
	const privs = "run as root, or give lazycr CAP_SYS_PTRACE and CAP_CHECKPOINT_RESTORE (userfaultfd for other users needs sysctl vm.unprivileged_userfaultfd=1 or access to /dev/userfaultfd)"
	switch {
	case len(unsupported) == 0 && len(denied) == 0:
		return nil
	case len(unsupported) == 0:
		return fmt.Errorf("lazy migration cannot work with this user's privileges: %s not permitted; %s", strings.Join(denied, ", "), privs)
	case len(denied) == 0:
		return fmt.Errorf("lazy migration cannot work on this kernel: missing %s", strings.Join(unsupported, ", "))
	default:
		return fmt.Errorf("lazy migration cannot work here: this kernel lacks %s; this user may not use %s (%s)", strings.Join(unsupported, ", "), strings.Join(denied, ", "), privs)
	}
}
