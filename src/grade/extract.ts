// Answer extraction: the content of the last \boxed{...} (or \fbox{...}) in a
// response. One linear scan; a truncated or unbalanced last box is no answer,
// so a response cut off mid-answer never earns credit for a partial box.

export interface ExtractOptions {
  /**
   * DeepScaleR's rule: take the answer only from the text after the last
   * `</think>`; a response without `</think>` (still thinking when it was
   * cut off) has no answer.
   */
  afterThink?: boolean;
}

const THINK_END = "</think>";
const BOX_RE = /\\(?:boxed|fbox)(?![A-Za-z])/g;

/** The text after the last `</think>`, or null when there is none. */
export function textAfterThink(response: string): string | null {
  const i = response.lastIndexOf(THINK_END);
  return i < 0 ? null : response.slice(i + THINK_END.length);
}

/** The last boxed answer in `response`, trimmed, or null when there is none. */
export function extractAnswer(response: string, opts: ExtractOptions = {}): string | null {
  let text: string | null = response;
  if (opts.afterThink) text = textAfterThink(response);
  if (text === null) return null;
  let last = -1;
  let end = 0;
  BOX_RE.lastIndex = 0;
  for (let m = BOX_RE.exec(text); m; m = BOX_RE.exec(text)) {
    last = m.index;
    end = m.index + m[0].length;
  }
  if (last < 0) return null;
  return boxContent(text, end);
}

/**
 * The argument of a box command whose name ends at `i`: a brace group
 * (nested braces, `\{` `\}` escapes skipped), or for `\boxed 5` the text up to
 * the next `$`, newline or end.
 */
function boxContent(text: string, i: number): string | null {
  let j = i;
  while (j < text.length && (text[j] === " " || text[j] === "\t")) j++;
  if (text[j] === "{") {
    let depth = 0;
    for (let k = j; k < text.length; k++) {
      const c = text[k];
      if (c === "\\") {
        k++; // skip the escaped character (\{, \}, \\)
      } else if (c === "{") {
        depth++;
      } else if (c === "}") {
        depth--;
        if (depth === 0) {
          const inner = text.slice(j + 1, k).trim();
          return inner === "" ? null : inner;
        }
      }
    }
    return null; // unbalanced: cut off inside the box
  }
  let k = j;
  while (k < text.length && text[k] !== "$" && text[k] !== "\n") k++;
  const inner = text.slice(j, k).trim().replace(/[.\s]+$/, "");
  return inner === "" ? null : inner;
}
