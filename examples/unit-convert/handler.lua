-- sensors/<device>/temp {"temp": 21.5} -> readings/<device>/temp {"c":21.5,"f":70.7,"k":294.65}
local function round(x, places)
  local m = 10 ^ places
  return math.floor(x * m + 0.5) / m
end

return function(event, ctx)
  local c = event.data and event.data.temp
  if type(c) ~= "number" then
    return -- not a reading; nothing to convert
  end
  local dev = event.subject:match("^sensors/([^/]+)/temp$")
  ctx.publish("readings/" .. dev .. "/temp", {
    dev = dev, c = c, f = round(c * 9 / 5 + 32, 2), k = round(c + 273.15, 2),
  })
end
