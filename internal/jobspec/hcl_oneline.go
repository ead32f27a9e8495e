package jobspec

import (
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// relaxOneLineBlocks lets a block hold several attributes on one line,
// such as
//
//	restart { attempts = 2  delay = "5s" }
//
// which HCL itself refuses (a one-line block may hold one attribute). It
// turns one blank before each attribute of such a block, and before its
// closing brace, into a newline. Byte offsets do not change, so positions
// are taken from the original source by byte offset. Blocks it cannot
// rewrite safely (nested blocks, no blank to turn) are left for HCL to
// report.
func relaxOneLineBlocks(src []byte) []byte {
	tokens, diags := hclsyntax.LexConfig(src, "", hcl.InitialPos)
	if diags.HasErrors() {
		return src
	}
	type frame struct {
		block     bool  // a block body, not an object, list, call or string
		multiline bool  // a newline follows the opening brace
		nested    bool  // holds a block or object of its own
		attrs     []int // token indexes of the attribute names directly inside
	}
	var stack []*frame
	var out []byte
	for i, tok := range tokens {
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch tok.Type {
		case hclsyntax.TokenOBrace:
			if top != nil {
				top.nested = true
			}
			f := &frame{block: i > 0 && (tokens[i-1].Type == hclsyntax.TokenIdent || tokens[i-1].Type == hclsyntax.TokenCQuote)}
			f.multiline = i+1 < len(tokens) && (tokens[i+1].Type == hclsyntax.TokenNewline || tokens[i+1].Type == hclsyntax.TokenComment)
			stack = append(stack, f)
		case hclsyntax.TokenOBrack, hclsyntax.TokenOParen, hclsyntax.TokenTemplateInterp,
			hclsyntax.TokenTemplateControl, hclsyntax.TokenOQuote, hclsyntax.TokenOHeredoc:
			stack = append(stack, &frame{})
		case hclsyntax.TokenCBrace, hclsyntax.TokenCBrack, hclsyntax.TokenCParen,
			hclsyntax.TokenTemplateSeqEnd, hclsyntax.TokenCQuote, hclsyntax.TokenCHeredoc:
			if top == nil {
				return src // unbalanced: HCL will say where
			}
			stack = stack[:len(stack)-1]
			if tok.Type != hclsyntax.TokenCBrace || !top.block || top.multiline || top.nested || len(top.attrs) < 2 {
				continue
			}
			spots := make([]int, 0, len(top.attrs)+1)
			for _, a := range top.attrs {
				spots = append(spots, tokens[a].Range.Start.Byte)
			}
			spots = append(spots, tok.Range.Start.Byte)
			if !allAfterBlank(src, spots) {
				continue
			}
			if out == nil {
				out = append([]byte(nil), src...)
			}
			for _, s := range spots {
				out[s-1] = '\n'
			}
		case hclsyntax.TokenIdent:
			if top != nil && top.block && i+1 < len(tokens) && tokens[i+1].Type == hclsyntax.TokenEqual {
				top.attrs = append(top.attrs, i)
			}
		}
	}
	if out == nil {
		return src
	}
	return out
}

// allAfterBlank reports whether a space or tab precedes every offset.
func allAfterBlank(src []byte, offsets []int) bool {
	for _, o := range offsets {
		if o < 1 || o > len(src) || (src[o-1] != ' ' && src[o-1] != '\t') {
			return false
		}
	}
	return true
}
