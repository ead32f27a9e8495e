package caravan

import (
	"strconv"
	"strings"
)

// Suggest returns ` (did you mean "x"?)` for the known name closest to an
// unknown key (case-insensitive edit distance under 3, and shorter than
// the key), or "": the hint the decoders add to an unknown field's error.
func Suggest(names []string, key string) string {
	best, bestDist := "", 3
	k := strings.ToLower(key)
	for _, n := range names {
		if d := editDistance(k, strings.ToLower(n)); d < bestDist {
			best, bestDist = n, d
		}
	}
	if best == "" || bestDist >= len(key) {
		return ""
	}
	return " (did you mean " + strconv.Quote(best) + "?)"
}

// editDistance is the Levenshtein distance of two short strings; longer
// ones count as far apart.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
