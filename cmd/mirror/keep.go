package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/spf13/pflag"
)

// Environment variables for the keep policy, read as MIRROR_DB is: a flag
// beats them, and they beat the default.
const (
	envKeep       = "MIRROR_KEEP"
	envKeepWithin = "MIRROR_KEEP_WITHIN"
)

// keepNone is the --keep-within value that keeps no generation for its
// age alone.
const keepNone = "none"

// keepFlags registers --keep and --keep-within on fs and returns a
// resolver for the policy they give: each flag, then its environment
// variable, then the default. The policy it returns is explicit (Last > 0,
// Within > 0 or negative for none), so that it prints as it applies.
func keepFlags(fs *pflag.FlagSet) func(e *env) (mirror.KeepPolicy, error) {
	last := fs.String("keep", "", fmt.Sprintf("keep the newest `N` generations, the current one included (default $%s, then %d)", envKeep, mirror.DefaultKeepLast))
	within := fs.String("keep-within", "", fmt.Sprintf("also keep every generation published within `D`, a duration such as 72h, or %s to keep none for its age (default $%s, then 168h: 7 days)", keepNone, envKeepWithin))
	return func(e *env) (mirror.KeepPolicy, error) {
		var p mirror.KeepPolicy
		s, from := setting(fs, e, "keep", *last, envKeep)
		n, err := parseKeepLast(s, from)
		if err != nil {
			return p, err
		}
		s, from = setting(fs, e, "keep-within", *within, envKeepWithin)
		d, err := parseKeepWithin(s, from)
		if err != nil {
			return p, err
		}
		return mirror.KeepPolicy{Last: n, Within: d}, nil
	}
}

// setting returns the value of flag name when it was given on the command
// line, else that of the environment variable, with where it came from
// ("--keep", "MIRROR_KEEP") for messages.
func setting(fs *pflag.FlagSet, e *env, name, value, envName string) (string, string) {
	if fs.Changed(name) {
		return value, "--" + name
	}
	return e.getenv(envName), envName
}

// parseKeepLast parses a --keep value: a whole number of generations; ""
// and 0 mean the default.
func parseKeepLast(s, from string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return mirror.DefaultKeepLast, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, usageError("%s %q: want a whole number of generations to keep, such as 30 (0 means the default, %d; the current generation is always kept)", from, s, mirror.DefaultKeepLast)
	}
	if n == 0 {
		return mirror.DefaultKeepLast, nil
	}
	return n, nil
}

// parseKeepWithin parses a --keep-within value: a duration, or "none"
// (negative in the policy); "" and 0 mean the default.
func parseKeepWithin(s, from string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return mirror.DefaultKeepWithin, nil
	case strings.EqualFold(s, keepNone):
		return -1, nil
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, usageError("%s %q: want a duration such as 72h or 30m, or %s to keep no generation for its age (0 means the default, 168h)", from, s, keepNone)
	case d < 0:
		return 0, usageError("%s %s: a duration cannot be negative; pass 0 (the default, 168h), a duration such as 72h, or %s to keep no generation for its age", from, s, keepNone)
	case d == 0:
		return mirror.DefaultKeepWithin, nil
	}
	return d, nil
}
