-- Alerts when a reading is above THRESHOLD. Readings look like
--   sensors/<device>/temp  {"dev": "kitchen", "temp": 31.5}
local threshold

return function(event, ctx)
  threshold = threshold or tonumber(ctx.env.THRESHOLD)
  local reading = event.data
  if type(reading) ~= "table" or type(reading.temp) ~= "number" then
    error("expected {\"temp\": <number>} on " .. tostring(event.subject) .. ", got " .. event.payload)
  end
  local dev = reading.dev or event.subject:match("^sensors/([^/]+)/") or "unknown"
  if reading.temp > threshold then
    ctx.log.warn(dev, "is at", reading.temp, "C, above", threshold)
    ctx.publish("alerts/" .. dev, {
      dev = dev, temp = reading.temp, threshold = threshold, at = event.time,
    }, {qos = 1})
  end
end
