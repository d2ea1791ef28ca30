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

It exits 1, naming them, when a required feature is missing.`,
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
						if !r.Required {
							status = "missing (optional)"
						}
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, status, r.Detail)
				}
				tw.Flush()
			}
			var missing []string
			for _, r := range results {
				if r.Required && !r.OK {
					missing = append(missing, r.Name)
				}
			}
			if len(missing) > 0 {
				return fmt.Errorf("lazy migration cannot work on this kernel: missing %s", strings.Join(missing, ", "))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the results as a JSON array")
	return cmd
}
