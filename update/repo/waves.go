package repo

import (
	"fmt"
	"strconv"
	"strings"

	"cairn.dev/cairn/update/tuf"
)

// ParseWaves reads a rollout written as "0h:10%,24h:50%,48h:100%": each wave
// is a start (whole hours, "Nh", or days, "Nd", after publishing) and the
// percentage of machines let in from then on. "" means no waves.
func ParseWaves(s string) ([]tuf.Wave, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var waves []tuf.Wave
	for _, part := range strings.Split(s, ",") {
		start, pct, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok {
			return nil, fmt.Errorf("wave %q: want START:PERCENT%%, such as 24h:50%%", part)
		}
		var hours int64
		var err error
		switch {
		case strings.HasSuffix(start, "h"):
			hours, err = strconv.ParseInt(strings.TrimSuffix(start, "h"), 10, 64)
		case strings.HasSuffix(start, "d"):
			hours, err = strconv.ParseInt(strings.TrimSuffix(start, "d"), 10, 64)
			if hours > 1<<40 {
				err = fmt.Errorf("too large")
			}
			hours *= 24
		default:
			err = fmt.Errorf("no unit")
		}
		if err != nil {
			return nil, fmt.Errorf("wave %q: start %q is not whole hours (Nh) or days (Nd)", part, start)
		}
		p, err := strconv.ParseInt(strings.TrimSuffix(pct, "%"), 10, 64)
		if err != nil || !strings.HasSuffix(pct, "%") {
			return nil, fmt.Errorf("wave %q: %q is not a whole percentage such as 50%%", part, pct)
		}
		waves = append(waves, tuf.Wave{StartAfterHours: hours, Percent: p})
	}
	if err := tuf.ValidateWaves(waves); err != nil {
		return nil, err
	}
	if waves[len(waves)-1].Percent != 100 {
		return nil, fmt.Errorf("the last wave lets %d%% in, it must reach 100%%", waves[len(waves)-1].Percent)
	}
	return waves, nil
}
