// CLI of the udpp program, shared by cmd/udpp and the hidden "lazycr udpp".

package udpp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

const usage = `usage:
  udpp server PORT
  udpp client SERVER PORT [--local-port P] [--interval D] [--no-connect] [--count N]

The server answers "This is ping packet N" with "This is pong packet N" and
prints three lines per ping. The client pings every interval (default 200ms)
from 0.0.0.0:P (default 38374; 0 = any port), connect(2)ed to the server
unless --no-connect, prints "pong N from IP:PORT" per pong and a stats line
every second, on SIGUSR1 and on exit. --count N stops after N pings (0 =
forever). The server announces "udpp server listening on ADDR" on stderr.
`

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// run is the whole program; statsNow delivers SIGUSR1.
// Main runs the udpp command line (cmd/udpp and the hidden "lazycr udpp")
// and returns its exit code: 0 success (also on SIGINT/SIGTERM), 1 runtime
// error, 2 usage. statsNow asks the client for a stats line (SIGUSR1).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, statsNow <-chan os.Signal) int {
	err := dispatch(ctx, args, stdout, stderr, statsNow)
	var ue usageError
	switch {
	case err == nil, errors.Is(err, context.Canceled):
		return 0
	case errors.Is(err, errHelp):
		fmt.Fprint(stdout, usage)
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "udpp: %v\n%s", err, usage)
		return 2
	default:
		fmt.Fprintf(stderr, "udpp: %v\n", err)
		return 1
	}
}

var errHelp = errors.New("help")

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer, statsNow <-chan os.Signal) error {
	var pos []string
	cfg := ClientConfig{StatsNow: statsNow}
	localPort := DefaultLocalPort
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "-h" || a == "--help" || a == "help" {
			return errHelp
		}
		if !strings.HasPrefix(a, "--") {
			pos = append(pos, a)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if name == "no-connect" {
			if hasVal {
				return usageError{"--no-connect takes no value"}
			}
			cfg.NoConnect = true
			continue
		}
		if !hasVal {
			if i+1 == len(args) {
				return usageError{fmt.Sprintf("--%s needs a value", name)}
			}
			i++
			val = args[i]
		}
		var err error
		switch name {
		case "local-port":
			localPort, err = parsePort(val)
		case "interval":
			cfg.Interval, err = time.ParseDuration(val)
			if err == nil && cfg.Interval <= 0 {
				err = errors.New("must be positive")
			}
		case "count":
			cfg.Count, err = strconv.Atoi(val)
			if err == nil && cfg.Count < 0 {
				err = errors.New("must not be negative")
			}
		default:
			return usageError{fmt.Sprintf("unknown flag --%s", name)}
		}
		if err != nil {
			return usageError{fmt.Sprintf("--%s %q: %v", name, val, err)}
		}
	}
	if len(pos) == 0 {
		return usageError{"missing command"}
	}
	switch pos[0] {
	case "server":
		if len(pos) != 2 {
			return usageError{"server takes PORT"}
		}
		port, err := parsePort(pos[1])
		if err != nil {
			return usageError{fmt.Sprintf("port %q: %v", pos[1], err)}
		}
		s, err := Listen(port)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "udpp server listening on %s\n", s.Addr())
		return s.Serve(ctx, stdout)
	case "client":
		if len(pos) != 3 {
			return usageError{"client takes SERVER PORT"}
		}
		port, err := parsePort(pos[2])
		if err != nil || port == 0 {
			return usageError{fmt.Sprintf("port %q: bad port", pos[2])}
		}
		cfg.Server, cfg.Port = pos[1], port
		cfg.LocalPort = localPort
		if localPort == 0 {
			cfg.LocalPort = AnyPort
		}
		_, err = RunClient(ctx, cfg, stdout)
		return err
	default:
		return usageError{fmt.Sprintf("unknown command %q", pos[0])}
	}
}

func parsePort(s string) (int, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, errors.New("not a port number")
	}
	return int(p), nil
}
