"""The demo shop's catalog: six categories, forty-two products (twelve on sale), and the
journal's buying guides. Plain data, no Django: the storefront's views, the synthetic
shoppers and the recommendations catalog all read it from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Category:
    slug: str
    name: str
    blurb: str


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    name: str
    category: str  # a Category slug
    price: int  # euros, what it sells for now
    compare_at: int | None  # the regular price while on sale, else None
    description: str
    color: str  # hex, for the placeholder image
    tags: tuple[str, ...] = ()

    @property
    def on_sale(self) -> bool:
        return self.compare_at is not None and self.compare_at > self.price


@dataclass(frozen=True, slots=True)
class Guide:
    """A journal article (content, not for sale): what content explorers read."""

    slug: str
    title: str
    category: str  # the Category slug it helps to choose from
    blurb: str
    minutes: int  # reading time


CATEGORIES: tuple[Category, ...] = (
    Category("shoes", "Shoes", "Trail runners, city sneakers and boots made to be worn in."),
    Category("jackets", "Jackets", "Shells, parkas and layers for every kind of weather."),
    Category("bags", "Bags", "Backpacks, totes and weekenders that carry a day or a week."),
    Category("accessories", "Accessories", "Caps, scarves, bottles and the small things."),
    Category("outdoor", "Outdoor gear", "Tents, stoves and poles for nights under the sky."),
    Category("knitwear", "Knitwear", "Merino and wool knits, warm without the weight."),
)


def _p(
    id: str,
    name: str,
    category: str,
    price: int,
    compare_at: int | None,
    description: str,
    color: str,
    *tags: str,
) -> Product:
    return Product(id, name, category, price, compare_at, description, color, tags)


PRODUCTS: tuple[Product, ...] = (
    # shoes
    _p("trail-runner", "Trail Runner", "shoes", 129, None,
       "Grippy lugs, a rock plate and a snug heel for fast miles off road.", "#d9480f",
       "running", "trail"),
    _p("city-sneaker", "City Sneaker", "shoes", 89, None,
       "A clean leather low-top that goes with everything.", "#f1f3f5", "everyday"),
    _p("leather-boot", "Leather Boot", "shoes", 199, 249,
       "Full-grain leather, Goodyear welted, resoleable for years.", "#7f4f24", "boots",
       "winter"),
    _p("hiking-boot", "Hiking Boot", "shoes", 169, None,
       "Waterproof membrane and ankle support for long days on the trail.", "#5c940d",
       "hiking", "waterproof"),
    _p("canvas-slip-on", "Canvas Slip-on", "shoes", 39, 55,
       "Light organic canvas for summer days and beach walks.", "#4dabf7", "summer"),
    _p("road-racer", "Road Racer", "shoes", 149, None,
       "A carbon-plated racer for race day and fast tempo runs.", "#f03e3e", "running"),
    _p("wool-slipper", "Wool Slipper", "shoes", 49, None,
       "Felted wool and a soft sole: for the sofa and the hut.", "#adb5bd", "home"),
    # jackets
    _p("rain-shell", "Rain Shell", "jackets", 159, None,
       "Three-layer waterproof, taped seams, packs into its own pocket.", "#1c7ed6",
       "waterproof", "packable"),
    _p("down-parka", "Down Parka", "jackets", 279, 349,
       "Responsibly sourced 700-fill down and a hood that blocks the wind.", "#212529",
       "winter", "warm"),
    _p("denim-jacket", "Denim Jacket", "jackets", 99, None,
       "Heavy selvedge denim that fades the way you wear it.", "#364fc7", "everyday"),
    _p("fleece-midlayer", "Fleece Midlayer", "jackets", 59, 79,
       "Recycled grid fleece: warm, breathable, quick to dry.", "#e8590c", "layering"),
    _p("softshell", "Softshell Jacket", "jackets", 139, None,
       "Stretchy, windproof and made for moving uphill.", "#495057", "hiking"),
    _p("insulated-vest", "Insulated Vest", "jackets", 89, None,
       "Synthetic insulation that stays warm when it is damp.", "#2f9e44", "layering",
       "warm"),
    _p("trench-coat", "Trench Coat", "jackets", 229, None,
       "A water-repellent cotton trench with a removable lining.", "#c8a165", "city"),
    # bags
    _p("weekender", "Weekender", "bags", 149, None,
       "Waxed canvas and leather handles: two nights, one bag.", "#6f4e37", "travel"),
    _p("laptop-backpack", "Laptop Backpack", "bags", 119, None,
       "A padded 16-inch sleeve, a luggage pass-through and a hidden pocket.", "#343a40",
       "work", "travel"),
    _p("tote", "Canvas Tote", "bags", 29, 39,
       "Heavy cotton tote with an inner zip pocket.", "#ffd43b", "everyday"),
    _p("hip-pack", "Hip Pack", "bags", 45, None,
       "Keys, phone and snacks, on the hip or across the body.", "#12b886", "running"),
    _p("daypack-25", "Daypack 25 L", "bags", 99, None,
       "A ventilated back panel and a hydration sleeve for day hikes.", "#0b7285",
       "hiking"),
    _p("duffel-60", "Duffel 60 L", "bags", 129, 159,
       "A water-resistant duffel that turns into a backpack.", "#e64980", "travel"),
    _p("messenger", "Messenger Bag", "bags", 89, None,
       "A cycling messenger with a quick-release strap.", "#868e96", "city"),
    # accessories
    _p("beanie", "Merino Beanie", "accessories", 29, None,
       "Soft merino rib knit that does not itch.", "#c92a2a", "winter", "warm"),
    _p("wool-scarf", "Wool Scarf", "accessories", 49, 69,
       "A generous lambswool scarf in a herringbone weave.", "#862e9c", "winter"),
    _p("water-bottle", "Insulated Bottle", "accessories", 25, None,
       "Keeps drinks cold for 24 hours and hot for 12.", "#15aabf", "hiking"),
    _p("sunglasses", "Sunglasses", "accessories", 79, None,
       "Polarized lenses in a light recycled frame.", "#fab005", "summer"),
    _p("running-cap", "Running Cap", "accessories", 25, None,
       "Ultralight, quick-drying, with a reflective logo.", "#f8f9fa", "running"),
    _p("leather-gloves", "Leather Gloves", "accessories", 59, None,
       "Lined goatskin gloves that work with touchscreens.", "#5f3dc4", "winter"),
    _p("trail-socks", "Trail Socks (3 pack)", "accessories", 19, 29,
       "Cushioned merino socks that keep feet dry.", "#74b816", "running", "hiking"),
    # outdoor gear
    _p("tent-2p", "Two-Person Tent", "outdoor", 349, None,
       "Freestanding, 1.9 kg, pitches in three minutes.", "#fd7e14", "camping"),
    _p("sleeping-bag", "Sleeping Bag -5 °C", "outdoor", 189, 239,
       "A down mummy bag that packs to the size of a loaf of bread.", "#1864ab",
       "camping", "warm"),
    _p("camp-stove", "Camp Stove", "outdoor", 59, None,
       "Boils a litre in three minutes; folds into its pot.", "#495057", "camping"),
    _p("trekking-poles", "Trekking Poles", "outdoor", 89, None,
       "Carbon poles with cork grips, folding to 38 cm.", "#212529", "hiking"),
    _p("headlamp", "Headlamp", "outdoor", 39, None,
       "400 lumens, rechargeable, with a red night mode.", "#f59f00", "camping", "running"),
    _p("sleeping-mat", "Sleeping Mat", "outdoor", 99, 129,
       "An insulated air mat that is quiet to sleep on.", "#099268", "camping"),
    _p("camp-chair", "Camp Chair", "outdoor", 69, None,
       "A packable chair for the campfire and the festival.", "#5c7cfa", "camping"),
    # knitwear
    _p("merino-crew", "Merino Crew", "knitwear", 89, None,
       "A fine-gauge merino crew neck: base layer or on its own.", "#343a40", "layering"),
    _p("fisherman-sweater", "Fisherman Sweater", "knitwear", 139, None,
       "Chunky cable knit in undyed Shetland wool.", "#e9ecef", "winter", "warm"),
    _p("cardigan", "Lambswool Cardigan", "knitwear", 119, 149,
       "A shawl-collar cardigan with horn buttons.", "#a61e4d", "city"),
    _p("hoodie", "Heavyweight Hoodie", "knitwear", 79, None,
       "Brushed organic cotton, a double-layer hood.", "#868e96", "everyday"),
    _p("turtleneck", "Turtleneck", "knitwear", 99, None,
       "A slim merino turtleneck for cold city days.", "#0c8599", "winter", "city"),
    _p("alpaca-sweater", "Alpaca Sweater", "knitwear", 159, 199,
       "Baby alpaca, light as air and warmer than wool.", "#d6336c", "warm"),
    _p("quarter-zip", "Quarter-Zip Pullover", "knitwear", 109, None,
       "A ribbed quarter-zip that layers over a tee or under a shell.", "#2b8a3e",
       "layering"),
)  # fmt: skip

GUIDES: tuple[Guide, ...] = (
    Guide("choosing-trail-shoes", "How to choose trail running shoes", "shoes",
          "Drop, lugs and rock plates, explained without the jargon.", 6),
    Guide("layering-101", "Layering 101: stay warm without overheating", "jackets",
          "Base, mid and shell: what each layer does and when to take it off.", 7),
    Guide("packing-a-weekender", "Packing a weekender for three days", "bags",
          "One bag, three outfits, no wrinkles.", 4),
    Guide("first-night-outdoors", "Your first night outdoors", "outdoor",
          "Tent, mat and bag: the checklist for a calm first night.", 9),
    Guide("caring-for-wool", "Caring for merino and wool", "knitwear",
          "Wash less, dry flat, and your knits will last a decade.", 5),
    Guide("winter-essentials", "Ten winter essentials", "accessories",
          "The small things that make a cold day a good day.", 5),
)  # fmt: skip

_BY_ID = {p.id: p for p in PRODUCTS}
_BY_CATEGORY = {c.slug: tuple(p for p in PRODUCTS if p.category == c.slug) for c in CATEGORIES}
_CATEGORY_BY_SLUG = {c.slug: c for c in CATEGORIES}


def product(id: str) -> Product | None:
    return _BY_ID.get(id)


def category(slug: str) -> Category | None:
    return _CATEGORY_BY_SLUG.get(slug)


def products_in(slug: str) -> tuple[Product, ...]:
    return _BY_CATEGORY.get(slug, ())


def products_on_sale() -> tuple[Product, ...]:
    return tuple(p for p in PRODUCTS if p.on_sale)


def product_path(p: Product) -> str:
    return f"/demo/p/{p.id}/"


def category_path(slug: str) -> str:
    return f"/demo/c/{slug}/"


def guide_path(g: Guide) -> str:
    return f"/demo/journal/{g.slug}/"


def product_properties(p: Product) -> dict[str, Any]:
    """The properties every product event carries (and the recommendations catalog
    reads: name → title, url and image_url → attributes). `on_sale` lets segments find
    the shoppers who look at discounted items."""
    return {
        "product_id": p.id,
        "name": p.name,
        "category": p.category,
        "price": p.price,
        "url": product_path(p),
        "image_url": f"/demo/img/{p.id}.svg",
        "on_sale": p.on_sale,
    }
