-- CSV field quoting per RFC 4180: quote fields holding a comma, quote or newline.
local M = {}

function M.field(v)
  local s = tostring(v)
  if s:find('[,"\r\n]') then
    s = '"' .. s:gsub('"', '""') .. '"'
  end
  return s
end

function M.line(...)
  local out = {}
  for i = 1, select("#", ...) do
    out[i] = M.field((select(i, ...)))
  end
  return table.concat(out, ",")
end

return M
