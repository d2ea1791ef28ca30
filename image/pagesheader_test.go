package image

import (
	"bytes"
	"testing"
)

// PagesHeader and NewPagesHash, data after them, make what EncodePages makes.
func TestPagesHeaderMatchesEncodePages(t *testing.T) {
	for _, n := range []int{0, 1, 3} {
		data := bytes.Repeat([]byte{byte(n + 7), 0, 0x5a, 1}, n*PageSize/4)
		h := NewPagesHash()
		for p := 0; p < len(data); p += PageSize {
			h.Write(data[p : p+PageSize])
		}
		got := append(PagesHeader(uint64(len(data)), h.Sum32()), data...)
		if !bytes.Equal(got, EncodePages(data)) {
			t.Fatalf("%d pages: PagesHeader+data differs from EncodePages", n)
		}
	}
}
