-- wrk script: storefront adds (POST /cart/ with a cartid cookie) over many
-- carts, each cart drawing from its own 5 products of the sample catalogue.
-- The carts are minted by the service first (cookies cannot be chosen):
--   cart-actor bench --workload mint --carts 10000 > ids
--   CART_IDS=ids wrk -t2 -c64 -d10s -s bench/mutate.lua http://127.0.0.1:8080
local ids = {}
for line in io.lines(os.getenv("CART_IDS")) do ids[#ids + 1] = line end
local skus = {}
for i = 0, 45 do skus[#skus + 1] = tostring(861200 + i * 17) end

request = function()
  local cart = math.random(1, #ids)
  local sku = skus[((cart + math.random(0, 4)) % #skus) + 1]
  return wrk.format("POST", "/cart/", { ["Cookie"] = "cartid=" .. ids[cart] },
    '{"sku":"' .. sku .. '","quantity":1}')
end

response = function(status, headers, body)
  if status ~= 200 then error("status " .. status .. ": " .. body) end
end
