"""Fixed vocabularies for the fixture generator.

Faker supplies person and company name pools; everything here is domain vocabulary that
Faker does not have (regions, industries, products, CRM subjects). Order matters: the
generator samples by index, so reordering an entry changes the generated fixtures.
"""

from __future__ import annotations

# (name, country, currency); customers are spread over these with skewed weights.
REGIONS: tuple[tuple[str, str, str], ...] = (
    ("North China", "China", "CNY"),
    ("East China", "China", "CNY"),
    ("South China", "China", "CNY"),
    ("Central China", "China", "CNY"),
    ("Southwest China", "China", "CNY"),
    ("Northeast China", "China", "CNY"),
    ("Bavaria", "Germany", "EUR"),
    ("North Rhine-Westphalia", "Germany", "EUR"),
    ("Baden-Wuerttemberg", "Germany", "EUR"),
    ("Berlin-Brandenburg", "Germany", "EUR"),
    ("Ile-de-France", "France", "EUR"),
    ("Auvergne-Rhone-Alpes", "France", "EUR"),
    ("Lombardy", "Italy", "EUR"),
    ("Catalonia", "Spain", "EUR"),
    ("Randstad", "Netherlands", "EUR"),
    ("Greater London", "United Kingdom", "GBP"),
    ("Scotland", "United Kingdom", "GBP"),
    ("Nordics", "Sweden", "SEK"),
    ("Northeast US", "United States", "USD"),
    ("Southeast US", "United States", "USD"),
    ("Midwest US", "United States", "USD"),
    ("Texas", "United States", "USD"),
    ("California", "United States", "USD"),
    ("Pacific Northwest", "United States", "USD"),
    ("Ontario", "Canada", "CAD"),
    ("Kanto", "Japan", "JPY"),
    ("Kansai", "Japan", "JPY"),
    ("Singapore", "Singapore", "SGD"),
    ("New South Wales", "Australia", "AUD"),
    ("Sao Paulo", "Brazil", "BRL"),
)

# (industry code, English name words, Chinese name words); three words each, so the
# generator can index words as industry * 3 + k.
INDUSTRIES: tuple[tuple[str, tuple[str, str, str], tuple[str, str, str]], ...] = (
    ("software", ("Software", "Systems", "Digital"), ("软件", "数字", "信息技术")),
    ("manufacturing", ("Manufacturing", "Industries", "Works"), ("制造", "实业", "机械")),
    ("retail", ("Retail", "Stores", "Trading"), ("商贸", "百货", "零售")),
    ("healthcare", ("Health", "Medical", "Care"), ("医疗", "健康", "医药")),
    ("finance", ("Capital", "Financial", "Partners"), ("金融", "投资", "资本")),
    ("logistics", ("Logistics", "Freight", "Transport"), ("物流", "运输", "供应链")),
    ("energy", ("Energy", "Power", "Solar"), ("能源", "电力", "新能源")),
    ("construction", ("Construction", "Builders", "Engineering"), ("建设", "建筑", "工程")),
    ("education", ("Learning", "Education", "Academy"), ("教育", "培训", "文化")),
    ("hospitality", ("Hospitality", "Hotels", "Resorts"), ("酒店", "餐饮", "旅游")),
    ("telecom", ("Telecom", "Networks", "Communications"), ("通信", "网络", "电信")),
    ("automotive", ("Automotive", "Motors", "Mobility"), ("汽车", "汽配", "出行")),
    ("food", ("Foods", "Farms", "Kitchens"), ("食品", "农业", "饮料")),
    ("media", ("Media", "Studios", "Publishing"), ("传媒", "影视", "出版")),
    ("pharma", ("Pharma", "Biotech", "Life Sciences"), ("制药", "生物", "生命科学")),
    ("chemicals", ("Chemicals", "Materials", "Polymers"), ("化工", "材料", "新材料")),
    ("agriculture", ("Agri", "Harvest", "Seeds"), ("农牧", "种业", "农产品")),
    ("real_estate", ("Properties", "Realty", "Estates"), ("地产", "置业", "物业")),
    ("consulting", ("Consulting", "Advisory", "Group"), ("咨询", "顾问", "管理")),
    ("electronics", ("Electronics", "Devices", "Semiconductors"), ("电子", "科技", "半导体")),
)

EN_COMPANY_SUFFIXES: tuple[str, ...] = ("Inc", "LLC", "Ltd", "Corp", "Group", "Co.", "PLC", "GmbH")
EN_COMPANY_SUFFIX_WEIGHTS: tuple[float, ...] = (0.3, 0.2, 0.15, 0.12, 0.08, 0.07, 0.04, 0.04)
ZH_COMPANY_SUFFIXES: tuple[str, ...] = ("有限公司", "股份有限公司", "集团有限公司", "有限责任公司")
ZH_COMPANY_SUFFIX_WEIGHTS: tuple[float, ...] = (0.55, 0.2, 0.1, 0.15)

# Syllables for ASCII web domains of Chinese companies.
PINYIN: tuple[str, ...] = (
    "an", "bai", "bao", "bei", "bo", "chang", "chen", "da", "de", "dong", "fang", "feng",
    "fu", "guang", "guo", "hai", "hao", "he", "hong", "hua", "hui", "jia", "jian", "jin",
    "jing", "kai", "kang", "le", "li", "lian", "long", "mei", "ming", "nan", "ning", "ping",
    "qi", "qian", "rui", "sheng", "shi", "tai", "tian", "tong", "wei", "xin", "xing", "yang",
    "yi", "yong", "yu", "yuan", "ze", "zhi", "zhong", "zhou",
)

TLDS_EN: tuple[str, ...] = (".com", ".com", ".com", ".com", ".net", ".io", ".co", ".org")
TLDS_ZH: tuple[str, ...] = (".com.cn", ".cn", ".cn", ".com")

TAGS: tuple[str, ...] = (
    "high-value", "churn-risk", "newsletter", "trade-show-2025", "trade-show-2024",
    "webinar-attendee", "beta-tester", "reference-customer", "partner", "reseller",
    "upsell-candidate", "cross-sell", "renewal-due", "late-payer", "key-account",
    "government", "non-profit", "startup", "enterprise", "smb", "mid-market",
    "decision-maker-engaged", "champion-left", "competitor-user", "price-sensitive",
    "early-adopter", "case-study", "nps-promoter", "nps-detractor", "support-escalation",
    "onboarding", "expansion", "dormant", "reactivated", "free-trial", "gdpr-request",
    "vip-event-2025", "annual-contract", "multi-region", "strategic-initiative",
)

# (category, SKU prefix, median unit price, English nouns, Chinese nouns)
PRODUCT_CATEGORIES: tuple[tuple[str, str, float, tuple[str, ...], tuple[str, ...]], ...] = (
    (
        "Software", "SW", 400.0,
        ("Suite", "Platform", "License", "Studio"),
        ("软件套件", "平台", "许可证", "工作室"),
    ),
    (
        "Cloud", "CL", 250.0,
        ("Subscription", "Compute Plan", "Storage Plan", "Backup"),
        ("订阅", "计算套餐", "存储套餐", "备份"),
    ),
    (
        "Hardware", "HW", 900.0,
        ("Server", "Workstation", "Appliance", "Gateway"),
        ("服务器", "工作站", "一体机", "网关"),
    ),
    (
        "Networking", "NW", 350.0,
        ("Router", "Switch", "Access Point", "Firewall"),
        ("路由器", "交换机", "无线接入点", "防火墙"),
    ),
    (
        "Storage", "ST", 600.0,
        ("NAS", "SSD Array", "Tape Library", "Disk Shelf"),
        ("网络存储", "固态阵列", "磁带库", "磁盘柜"),
    ),
    (
        "Security", "SE", 300.0,
        ("Scanner", "Token", "Vault", "Sensor"),
        ("扫描仪", "令牌", "保险库", "传感器"),
    ),
    (
        "Peripherals", "PE", 60.0,
        ("Keyboard", "Mouse", "Headset", "Webcam"),
        ("键盘", "鼠标", "耳机", "摄像头"),
    ),
    (
        "Printers", "PR", 180.0,
        ("Laser Printer", "Label Printer", "Plotter", "Toner"),
        ("激光打印机", "标签打印机", "绘图仪", "硒鼓"),
    ),
    (
        "Displays", "DI", 280.0,
        ("Monitor", "Projector", "Signage Panel", "Touch Display"),
        ("显示器", "投影仪", "广告屏", "触摸屏"),
    ),
    (
        "Accessories", "AC", 25.0,
        ("Cable", "Adapter", "Dock", "Stand"),
        ("线缆", "转接头", "扩展坞", "支架"),
    ),
    (
        "Services", "SV", 1500.0,
        ("Implementation", "Migration", "Audit", "Integration"),
        ("实施服务", "迁移服务", "审计服务", "集成服务"),
    ),
    (
        "Support", "SP", 800.0,
        ("Support Plan", "Care Pack", "Extended Warranty", "On-site Support"),
        ("支持计划", "服务包", "延保", "上门支持"),
    ),
    (
        "Training", "TR", 450.0,
        ("Course", "Workshop", "Certification", "Bootcamp"),
        ("课程", "研讨会", "认证", "训练营"),
    ),
)
PRODUCT_SERIES: tuple[str, ...] = (
    "Pro", "Max", "Lite", "Plus", "Ultra", "Go", "Edge", "Prime", "Core", "One", "Air", "X",
)

EN_TITLES: tuple[str, ...] = (
    "CEO", "CFO", "CTO", "CIO", "COO", "Head of Procurement", "Purchasing Manager",
    "IT Manager", "IT Director", "Operations Manager", "Office Manager", "Finance Director",
    "Head of Marketing", "Marketing Manager", "Sales Director", "Facilities Manager",
    "Project Manager", "Engineering Manager", "Product Manager", "Buyer",
    "Administrative Assistant", "Controller", "Head of Security", "Data Protection Officer",
)
ZH_TITLES: tuple[str, ...] = (
    "总经理", "财务总监", "技术总监", "信息总监", "运营总监", "采购经理", "采购主管",
    "IT经理", "行政经理", "财务经理", "市场总监", "市场经理", "销售总监", "项目经理",
    "工程经理", "产品经理", "采购专员", "总经理助理", "董事长", "副总经理",
)

ORDER_STATUSES_RECENT: tuple[str, ...] = ("pending", "paid", "shipped")
ORDER_STATUSES_RECENT_WEIGHTS: tuple[float, ...] = (0.3, 0.3, 0.4)
ORDER_STATUSES_OLD: tuple[str, ...] = ("delivered", "cancelled", "refunded")
ORDER_STATUSES_OLD_WEIGHTS: tuple[float, ...] = (0.9, 0.07, 0.03)

DEAL_NAMES_EN: tuple[str, ...] = (
    "Annual renewal", "Platform expansion", "Cloud migration", "New office rollout",
    "Hardware refresh", "Security upgrade", "Support extension", "Pilot project",
    "Enterprise agreement", "Training program", "Network overhaul", "Storage expansion",
)
DEAL_NAMES_ZH: tuple[str, ...] = (
    "年度续约", "平台扩容", "上云迁移", "新办公室部署", "硬件更新", "安全升级",
    "服务延期", "试点项目", "企业协议", "培训计划", "网络改造", "存储扩容",
)

LEAD_SOURCES: tuple[str, ...] = ("web", "referral", "trade_show", "cold_call", "partner")
LEAD_SOURCE_WEIGHTS: tuple[float, ...] = (0.4, 0.2, 0.15, 0.15, 0.1)

# Subjects per activity type, in schema.ACTIVITY_TYPES order; four each.
ACTIVITY_SUBJECTS_EN: tuple[tuple[str, ...], ...] = (
    ("Intro call", "Follow-up call", "Pricing discussion", "Renewal call"),
    ("Sent proposal", "Sent quote", "Answered product question", "Shared case study"),
    ("Discovery meeting", "Quarterly business review", "Product demo", "Contract negotiation"),
    ("Budget confirmed for next year", "Champion changed roles", "Prefers email contact",
     "Evaluating a competitor"),
    ("On-site visit", "Site survey", "Installation check", "Executive visit"),
)
ACTIVITY_SUBJECTS_ZH: tuple[tuple[str, ...], ...] = (
    ("初次电话沟通", "电话跟进", "价格沟通", "续约电话"),
    ("发送方案", "发送报价", "解答产品问题", "分享客户案例"),
    ("需求调研会议", "季度业务回顾", "产品演示", "合同谈判"),
    ("已确认明年预算", "关键联系人岗位变动", "偏好邮件联系", "正在评估竞品"),
    ("上门拜访", "现场勘察", "安装检查", "高层拜访"),
)

# Weights in schema.EVENT_TYPES order: page_view, email_open, download, support_call,
# pricing_view, purchase.
EVENT_TYPE_WEIGHTS: tuple[float, ...] = (0.45, 0.25, 0.08, 0.05, 0.12, 0.05)
PAGES: tuple[str, ...] = (
    "/", "/pricing", "/products", "/products/cloud", "/products/hardware", "/blog",
    "/blog/security-checklist", "/docs", "/docs/getting-started", "/support", "/contact",
    "/careers", "/case-studies", "/webinars", "/partners",
)
CAMPAIGNS: tuple[str, ...] = (
    "spring-2025", "summer-2025", "autumn-2025", "black-friday-2025", "newsletter-weekly",
    "product-launch-x", "renewal-reminder", "webinar-invite", "trade-show-followup",
)
DEVICES: tuple[str, ...] = ("desktop", "mobile", "tablet")
ASSETS: tuple[str, ...] = (
    "whitepaper-cloud.pdf", "datasheet-router.pdf", "pricing-2025.pdf", "case-study-retail.pdf",
    "security-guide.pdf", "roi-calculator.xlsx", "brochure.pdf", "installation-manual.pdf",
)
PLANS: tuple[str, ...] = ("starter", "business", "enterprise")
CHANNELS: tuple[str, ...] = ("phone", "chat", "email")
